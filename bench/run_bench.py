"""`make bench`: performance figures of the real system on this machine.

Every figure comes from real node processes over DDS (the commands of config/system.yaml), real
MuJoCo and, for the serial path, the board emulator on a real pty in this process (its
command_log has monotonic timestamps comparable with this process's clock). Writes
bench/results.json and bench/results.md (median, p99, max of each figure, the machine, and the
change against the previous results.json). A benchmark REPORTS: it never fails on a slow
machine; an error in one section is recorded and the others still run.

    python bench/run_bench.py [--only loop,serial,run,sim] [--rates 200,500,1000]
                              [--seconds 8] [--runs 2] [--speed 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import stats, wait_for  # noqa: E402

RESULTS_JSON = HERE / 'results.json'
RESULTS_MD = HERE / 'results.md'
RETRACTED_M = 0.001
SERIAL_BUDGET_S = 240.0  # the serial section stops repeating after this (a flapping link)
_serial_deadline = float('inf')


def _over_budget() -> bool:
    return time.monotonic() > _serial_deadline


def _periods_ms(samples, index: int) -> np.ndarray:
    t = np.asarray([s[index] for s in samples], dtype=float)
    return np.diff(t) * 1e3 if t.size > 1 else np.zeros(0)


def _loop_figures(samples, window_s: float, nominal_hz: float) -> dict:
    """From (arrival, stamp, ...) samples: publish rate and period jitter (stamps, the
    publisher's clock) and arrival jitter (this subscriber)."""
    stamp = _periods_ms(samples, 1)
    arrival = _periods_ms(samples, 0)
    if stamp.size < 2:
        return {'messages': len(samples)}
    return {
        'messages': len(samples),
        'rate_hz': float(len(samples) / window_s),
        'nominal_hz': nominal_hz,
        'period_ms': stats(stamp),
        'period_jitter_ms': float(np.std(stamp)),
        'missed_periods': int(np.sum(stamp > 1.5e3 / nominal_hz)),
        'arrival_period_ms': stats(arrival),
    }


# -- control loop at 200/500/1000 Hz ------------------------------------------------------------


def bench_loop(rate_hz: float, seconds: float, folder: Path) -> dict:
    """The four nodes, real time (sim_speed 1, no /clock), hw_interface and finger_controllers
    at rate_hz, idle program (setpoints 0). Rates from /joint_states and /finger_commands."""
    common = {'use_sim_time': False}
    overrides = {
        'hw_interface': {
            **common,
            'update_rate_hz': rate_hz,
            'sim_speed': 1.0,
            'publish_clock': False,
        },
        'finger_controllers': {**common, 'update_rate_hz': rate_hz},
        'safety_monitor': common,
        'program_sequencer': common,
    }
    log_dir = folder / f'loop_{int(rate_hz)}'
    log_dir.mkdir()
    nodes = harness.Nodes(log_dir, overrides)
    peer = harness.Peer(play_sequencer=False, name='bench_peer')
    try:
        nodes.start_all()
        started = time.monotonic()
        if not wait_for(lambda: len(peer.commands) > 50 and len(peer.joint_states) > 50, 90):
            tail = nodes.log_tail('hw_interface')
            return {'error': f'no /joint_states or /finger_commands: {tail}'}
        startup = time.monotonic() - started
        time.sleep(3.0)  # warm up
        t0 = time.monotonic()
        time.sleep(seconds)
        t1 = time.monotonic()
        states = [s for s in list(peer.joint_states) if t0 <= s[0] < t1]
        commands = [c for c in list(peer.commands) if t0 <= c[0] < t1]
        cpu = _cpu_of(nodes.pids(), 3.0)
        diag = peer.diagnostics.get('hw_interface: device', {})
        return {
            'nodes_up_to_data_s': startup,
            'joint_states': _loop_figures(states, t1 - t0, rate_hz),
            'finger_commands': _loop_figures(commands, t1 - t0, rate_hz),
            'hw_interface_diagnostics': {
                k: float(diag[k])
                for k in ('rate_hz', 'jitter_ms', 'period_p99_ms', 'compute_p99_ms')
                if k in diag
            },
            'cpu_percent': cpu,
        }
    finally:
        peer.close()
        nodes.stop_all()


def _cpu_of(pids: dict[str, int], seconds: float) -> dict:
    import psutil

    procs = {}
    for name, pid in pids.items():
        try:
            procs[name] = psutil.Process(pid)
            procs[name].cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(seconds)
    out = {}
    for name, proc in procs.items():
        with contextlib.suppress(psutil.Error):
            out[name] = round(proc.cpu_percent(None), 1)
    return out


# -- serial path: latency and safety reactions --------------------------------------------------


def bench_serial(folder: Path, repeats: int) -> dict:
    """hw_interface (serial backend) on the board emulator's pty, safety_monitor,
    finger_controllers; this process plays program_sequencer."""
    from backhug_hw_interface import protocol as p

    global _serial_deadline
    _serial_deadline = time.monotonic() + SERIAL_BUDGET_S
    log_dir = folder / 'serial'
    log_dir.mkdir()
    emulator = harness.EmulatorProcess(log_dir)  # its own process: not starved by this one
    common = {'use_sim_time': False}
    overrides = {
        'hw_interface': {
            **common,
            'backend': 'serial',
            'serial_port': emulator.port,
            'publish_clock': False,
        },
        'finger_controllers': common,
        'safety_monitor': common,
    }
    names = ['hw_interface', 'safety_monitor', 'finger_controllers']
    nodes = harness.Nodes(log_dir, overrides, names)
    peer = harness.Peer()
    out: dict = {}
    try:
        nodes.start_all()
        if not peer.ready(90):
            return {'error': 'safety never OK: ' + nodes.log_tail('hw_interface')}
        row5 = [i for i, n in enumerate(peer.names) if n.endswith('_05_joint')]
        out['setpoint_to_board_ms'] = stats(_setpoint_to_board(peer, emulator, row5, repeats))
        out['board_to_joint_states_ms'] = stats(
            _board_to_joint_states(peer, emulator, row5, repeats)
        )
        faults_before = len(emulator.faults_since(0.0))
        out['unprovoked_board_faults'] = [
            f'{p.fault_names(bits)} finger {finger}'
            for _, bits, finger in emulator.faults_since(0.0)
        ]
        out['unprovoked_board_fault_count'] = len(out['unprovoked_board_faults'])
        out.update(_reactions(peer, emulator, nodes, row5, max(2, repeats // 3)))
        out['board_faults_in_reaction_tests'] = len(emulator.faults_since(0.0)) - faults_before
    finally:
        peer.setpoints[:] = 0
        peer.close()
        nodes.stop_all()
        emulator.stop()
    return out


def _last_command(emulator) -> np.ndarray:
    commands = emulator.commands_since(time.monotonic() - 1.0)
    return commands[-1][1] if commands else np.zeros(26)


def _setpoint_to_board(peer, emulator, fingers, repeats) -> list[float]:
    """Setpoint 0 -> 40 N on row 5: publish time -> first COMMAND at the board moving row 5 up."""
    out = []
    for _ in range(repeats):
        if _over_budget():
            break
        peer.playing = True
        peer.setpoints[:] = 0.0
        if not peer.ready(30):  # a board watchdog trip on a loaded machine latches a fault
            continue
        wait_for(lambda: np.nanmax(peer.positions()[fingers]) < RETRACTED_M, 5)
        time.sleep(0.5)
        base = _last_command(emulator)[fingers].copy()
        peer.playing = False  # one publish, timed here, then the timer resumes
        values = np.zeros(len(peer.names))
        values[fingers] = 40.0
        peer.setpoints[:] = values
        t0 = time.monotonic()
        peer.publish_setpoints(values)
        peer.playing = True

        def first_move(t0=t0, base=base):
            return next(
                (c for c in emulator.commands_since(t0) if np.any(c[1][fingers] > base + 1e-5)),
                None,
            )

        if wait_for(lambda: first_move() is not None, 2.0, 0.05):
            out.append((first_move()[0] - t0) * 1e3)
        time.sleep(1.0)
    peer.setpoints[:] = 0.0
    return out


def _board_to_joint_states(peer, emulator, fingers, repeats) -> list[float]:
    """A +15 N push at the board on a finger pressing at 40 N (a load on a retracted finger
    rests on its end stop and is not measured) -> first /joint_states showing +8 N."""
    out = []
    index = fingers[0]
    name = peer.names[index]
    _press(peer, fingers)
    for _ in range(repeats):
        if _over_budget():
            break
        if not (peer.safety()[0] == peer.SafetyStatus.OK and not peer.hardware.safe_stopped):
            _press(peer, fingers)
        time.sleep(0.8)
        base = float(peer.loads()[index])
        t0 = time.monotonic()
        emulator.control(f'push {name} 15 0.3')

        def first_seen(t0=t0, base=base):
            states = list(peer.joint_states)
            return next((s for s in states if s[0] >= t0 and s[3][index] > base + 15), None)

        if wait_for(lambda: first_seen() is not None, 2.0, 0.005):
            out.append((first_seen()[0] - t0) * 1e3)
    return out


def _press(peer, fingers) -> bool:
    peer.setpoints[:] = 0.0
    if not peer.ready(60):
        return False
    peer.setpoints[fingers] = 40.0
    ok = wait_for(lambda: np.all(np.abs(peer.loads()[fingers] - 40) < 6), 20)
    time.sleep(0.3)
    return ok


def _first_retract_at_board(emulator, t0, index, reference, timeout_s=5.0) -> float | None:
    def found():
        return next(
            (c[0] for c in emulator.commands_since(t0) if c[1][index] < reference - 0.0002), None
        )

    wait_for(lambda: found() is not None, timeout_s, 0.05)
    at = found()
    return None if at is None else (at - t0) * 1e3


def _reactions(peer, emulator, nodes, fingers, repeats) -> dict:
    """Over-load at the board -> retract command at the board (safety_monitor path), the
    board's own over-load latch, the monitor's latch; safety_monitor killed -> hw_interface's
    guard retracts; hw_interface killed -> the board watchdog."""
    overload_cmd, overload_latch, board_overload = [], [], []
    guard, watchdog = [], []
    finger = fingers[0]
    name = peer.names[finger]
    for _ in range(repeats):
        if _over_budget():
            break
        if not _press(peer, fingers):
            continue
        reference = _last_command(emulator)[finger]
        t0 = time.monotonic()
        emulator.control(f'push {name} 400 0.5')
        overload_cmd.append(_first_retract_at_board(emulator, t0, finger, reference))
        wait_for(lambda: peer.safety()[1], 5)
        latch = [t for t, m in list(peer.status_log) if t >= t0 and m.latched]
        overload_latch.append((latch[0] - t0) * 1e3 if latch else None)
        faults = emulator.faults_since(t0)
        board_overload.append((faults[0][0] - t0) * 1e3 if faults else None)
        time.sleep(1.0)
        emulator.control('clear')
    for _ in range(repeats):
        if _over_budget():
            break
        if not _press(peer, fingers):
            continue
        reference = _last_command(emulator)[finger]
        t0 = time.monotonic()
        nodes.kill('safety_monitor')
        guard.append(_first_retract_at_board(emulator, t0, finger, reference))
        time.sleep(0.5)
        nodes.ensure_running()
    for _ in range(repeats):
        if _over_budget():
            break
        if not _press(peer, fingers):
            continue
        t0 = time.monotonic()
        nodes.kill('hw_interface')
        wait_for(lambda t0=t0: emulator.faults_since(t0), 3)
        faults = emulator.faults_since(t0)
        watchdog.append((faults[0][0] - t0) * 1e3 if faults else None)
        nodes.ensure_running()
        time.sleep(2.0)
    return {
        'overload_to_retract_command_at_board_ms': stats(overload_cmd),
        'overload_to_safety_latch_ms': stats(overload_latch),
        'overload_to_board_own_fault_ms': stats(board_overload),
        'safety_monitor_killed_to_retract_at_board_ms': stats(guard),
        'hw_interface_killed_to_board_watchdog_ms': stats(watchdog),
    }


# -- backhug run: start-up, resources, speed ------------------------------------------------------


def bench_run(folder: Path, runs: int, speed: float, program: str) -> dict:
    import psutil
    from backhug_programs.library import find_program

    duration = float(find_program(program).duration_s)
    startup, wall, rtf = [], [], []
    per_node: dict[str, list] = {}
    total_cpu, total_rss = [], []
    outcomes = []
    for k in range(runs):
        out = folder / f'run_{k}'
        command = ['backhug', 'run', '--program', program, '--speed', str(speed), '--out', str(out)]
        t0 = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        root = psutil.Process(process.pid)
        seen: dict[int, psutil.Process] = {}
        while process.poll() is None:
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                break
            for child in children:
                if child.pid not in seen:
                    seen[child.pid] = child
                    child.cpu_percent(None)
            time.sleep(1.0)
            cpu_sum, rss_sum = 0.0, 0
            for child in [root, *(seen[c.pid] for c in children)]:
                try:
                    cpu = child.cpu_percent(None)
                    rss = child.memory_info().rss
                    label = _node_label(child)
                except psutil.Error:
                    continue
                cpu_sum += cpu
                rss_sum += rss
                per_node.setdefault(label, []).append((cpu, rss / 2**20))
            total_cpu.append(cpu_sum)
            total_rss.append(rss_sum / 2**20)
        elapsed = time.monotonic() - t0
        summary = {}
        for path in out.rglob('summary.json'):
            summary = json.loads(path.read_text())
        outcomes.append(
            f'{summary.get("outcome", f"exit {process.returncode}")} {summary.get("reason") or ""}'
            f' after {elapsed:.0f} s'[:300]
        )
        first = summary.get('startup_to_first_setpoint_s')
        startup.append(first)
        wall.append(elapsed)
        if first is not None and summary.get('outcome') == 'COMPLETED':
            rtf.append(duration / max(1e-6, elapsed - first))
    nodes = {
        label: {
            'cpu_percent': stats([c for c, _ in values]),
            'rss_mb': stats([r for _, r in values]),
        }
        for label, values in per_node.items()
    }
    return {
        'program': program,
        'program_duration_s': duration,
        'speed_asked': speed,
        'outcomes': outcomes,
        'startup_to_first_setpoint_s': stats(startup),
        'wall_s': stats(wall),
        'achieved_real_time_factor': stats(rtf),
        'per_node': nodes,
        'system_cpu_percent': stats(total_cpu),
        'system_rss_mb': stats(total_rss),
    }


def _node_label(process) -> str:
    line = process.cmdline()
    for part in line:
        if part.startswith('__node:='):
            return part.split(':=', 1)[1]
    text = ' '.join(line[:3])
    return 'backhug run (supervisor)' if 'backhug' in text and 'run' in text else Path(line[0]).name


# -- DeviceSimulation real-time factor -----------------------------------------------------------


def bench_sim(seconds: float, repeats: int) -> dict:
    from backhug_hw_interface.sim import DeviceSimulation, SimulatedUser

    from backhug_description import load_description

    description = load_description('sim')
    n = len(description.joints)
    out = {}
    for dt in (0.01, 0.005):  # hw_interface steps once per cycle: 100 Hz (sim), 200 Hz
        factors = []
        for seed in range(repeats):
            sim = DeviceSimulation(description, SimulatedUser.load('default'), seed=seed)
            sim.set_targets(np.full(n, 0.02), np.ones(n, dtype=bool))
            steps = int(seconds / dt)
            t0 = time.perf_counter()
            for _ in range(steps):
                sim.step(dt)
                _ = sim.load_n
            factors.append(steps * dt / (time.perf_counter() - t0))
        out[f'step_{round(1 / dt)}_hz'] = stats(factors)
    out['fingers'] = n
    return out


# -- output ---------------------------------------------------------------------------------------


def _flatten(prefix: str, value, rows: list) -> None:
    if isinstance(value, dict) and 'n' in value and ('median' in value or value['n'] == 0):
        rows.append((prefix, value))
    elif isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f'{prefix}.{key}' if prefix else key, inner, rows)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        rows.append((prefix, {'n': 1, 'median': value, 'p99': value, 'max': value}))


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return '–'
    return f'{x:.3g}' if abs(x) < 1000 else f'{x:.0f}'


def write_markdown(results: dict, previous: dict | None) -> str:
    m = results['machine']
    lines = [
        '# Benchmark results',
        '',
        f'Measured {results["finished"]} by `make bench` ({results["elapsed_s"]:.0f} s).',
        f'Machine: {m["cpu"]}, {m["cores_logical"]} logical cores, {m["ram_gb"]} GB RAM, '
        f'Python {m["python"]}, load average at start {m["loadavg_at_start"]}.',
        '',
        'Figures: median, p99 and max over the samples of the run (n samples).'
        + (' Δ median: change against the previous results.json.' if previous else ''),
        '',
        '| figure | n | median | p99 | max |' + (' Δ median |' if previous else ''),
        '|---|---|---|---|---|' + ('---|' if previous else ''),
    ]
    rows: list = []
    _flatten('', results['figures'], rows)
    old_rows: dict = {}
    if previous:
        flat: list = []
        _flatten('', previous.get('figures', {}), flat)
        old_rows = dict(flat)
    for name, s in rows:
        row = f'| {name} | {s["n"]} | {_fmt(s.get("median"))} | {_fmt(s.get("p99"))} | '
        row += f'{_fmt(s.get("max"))} |'
        if previous:
            old = old_rows.get(name, {}).get('median')
            new = s.get('median')
            row += (
                f' {_fmt(new - old)} |'
                if isinstance(old, (int, float)) and isinstance(new, (int, float))
                else ' new |'
            )
        lines.append(row)
    if results.get('errors'):
        lines += ['', '## Errors', ''] + [f'- {k}: {v}' for k, v in results['errors'].items()]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', default='sim,loop,serial,run')
    parser.add_argument('--rates', default='200,500,1000')
    parser.add_argument('--seconds', type=float, default=8.0, help='measuring window per rate')
    parser.add_argument('--repeats', type=int, default=8, help='latency repetitions')
    parser.add_argument('--runs', type=int, default=2, help='backhug run repetitions')
    parser.add_argument('--speed', type=float, default=10.0, help='backhug run --speed')
    parser.add_argument('--program', default='demo')
    parser.add_argument('--out', type=Path, default=RESULTS_JSON)
    parser.add_argument(
        '--merge', action='store_true', help='keep the other sections of the existing --out'
    )
    args = parser.parse_args(argv)
    sections = args.only.split(',')
    harness.reserve_domain()
    previous = json.loads(args.out.read_text()) if args.out.exists() else None
    results: dict = {'machine': harness.machine(), 'figures': {}, 'errors': {}}
    if args.merge and previous:  # add these sections to the previous run's figures
        results['figures'] = dict(previous.get('figures', {}))
        results['errors'] = dict(previous.get('errors', {}))
        results['machine']['earlier_sections'] = previous.get('machine')
        previous = previous.get('previous')
    results['previous'] = previous and {'figures': previous.get('figures', {})}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='backhug_bench_') as tmp:
        folder = Path(tmp)
        jobs = []
        if 'sim' in sections:
            jobs.append(('device_simulation_rtf', lambda: bench_sim(5.0, 3)))
        if 'loop' in sections:
            for rate in [float(r) for r in args.rates.split(',')]:
                job = lambda r=rate: bench_loop(r, args.seconds, folder)  # noqa: E731
                jobs.append((f'loop_{int(rate)}_hz', job))
        if 'serial' in sections:
            jobs.append(('serial', lambda: bench_serial(folder, args.repeats)))
        if 'run' in sections:
            jobs.append(
                ('backhug_run', lambda: bench_run(folder, args.runs, args.speed, args.program))
            )
        for name, job in jobs:
            print(f'[bench] {name} ...', flush=True)
            t0 = time.monotonic()
            try:
                results['figures'][name] = job()
                results['errors'].pop(name, None)
            except Exception as exc:  # a benchmark reports, it does not fail
                results['errors'][name] = f'{type(exc).__name__}: {exc}'
                traceback.print_exc()
            print(f'[bench] {name} done in {time.monotonic() - t0:.0f} s', flush=True)
            print(json.dumps(results['figures'].get(name), indent=1, default=str)[:3000])
    results['elapsed_s'] = time.monotonic() - started
    results['finished'] = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    args.out.write_text(json.dumps(results, indent=1, default=str) + '\n')
    markdown = write_markdown(results, previous)
    args.out.with_suffix('.md').write_text(markdown)
    print(markdown)
    return 0


if __name__ == '__main__':
    sys.exit(main())
