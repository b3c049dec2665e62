"""`make faults`: a randomised fault campaign against the real system, during a program.

Two system instances, one after the other (the serial faults need the board emulator):

- ``sim``: hw_interface (MuJoCo, fault injection, real time), safety_monitor, finger_controllers,
  program_sequencer from config/system.yaml. Faults: kill -9 of any node, frozen sensor, stalled
  finger, load spike, emergency stop, malformed program upload (inline ``program_yaml``),
  out-of-range parameter set at run time (rcl_interfaces SetParameters), NaN setpoints.
- ``serial``: the same nodes with hw_interface's serial backend on the board emulator's pty (the
  emulator runs in this process: its command_log is checked). Faults: serial disconnect,
  frame-corruption burst, kill -9 of any node, and the board-side frozen sensor, stalled finger,
  load spike and e-stop.

One system stays up per family; a killed node is restarted. Each trial, with ``full_back``
running (its forces pressing): inject the fault, then check

1. ``retracted``: a fault that must stop the device ends with every finger below 1 mm within
   RETRACT_BOUND_S (a refused input must be refused: REJECTED goal, unsuccessful parameter set);
   after the fault is cleared and the program cancelled, every finger is below 1 mm within the
   bound (every trial). Where the finger is comes from the device itself, not from its sensor:
   the emulator's simulation (serial) or hw_interface's simulated-truth diagnostics (sim) for
   the finger whose sensor is frozen. A jammed (stalled) finger cannot retract: it must be
   stopped by a latched safe stop while every other finger retracts;
2. ``limits``: every /finger_commands target and (serial) every COMMAND at the board stayed
   finite and inside the joint's travel;
3. ``recording``: the trial's MCAP recording reads back (read_session, not truncated, commands
   in it);
4. ``rerun``: the safety latch resets and a new program goal is accepted, runs and presses
   (up to RERUN_ATTEMPTS resets, each failed one recorded with its reason).

A violation is any failed check. Seeded (``--seed``) and reproducible in its choices (the
timing of a real system is not). Prints a table and writes bench/faults.json after every trial.

    python bench/faults.py [--trials 200] [--seed 1] [--families sim,serial] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import wait_for  # noqa: E402

RETRACTED_M = 0.001
RETRACT_BOUND_S = 10.0  # wall s: 40 mm at 0.02 m/s is 2 s; the rest is a loaded 2-core host
RERUN_ATTEMPTS = 3
NODES = ['hw_interface', 'safety_monitor', 'finger_controllers', 'program_sequencer']
SIM_FAULTS = [
    'kill',
    'frozen_sensor',
    'stalled_finger',
    'load_spike',
    'estop',
    'malformed_program',
    'bad_parameter',
    'nan_setpoints',
]
SERIAL_FAULTS = [
    'serial_disconnect',
    'corruption_burst',
    'kill',
    'frozen_sensor',
    'stalled_finger',
    'load_spike',
    'estop',
]
FAULTS_OF = {'sim': SIM_FAULTS, 'serial': SERIAL_FAULTS}
MUST_STOP = {'kill', 'load_spike', 'estop', 'serial_disconnect', 'frozen_sensor', 'stalled_finger'}
BAD_PARAMETERS = [
    ('finger_controllers', 'fingers.{finger}.max_force_n', 1e6),
    ('finger_controllers', 'fingers.{finger}.max_velocity_m_s', math.nan),
    ('finger_controllers', 'fingers.{finger}.max_position_m', -0.5),
    ('finger_controllers', 'update_rate_hz', 1e9),
    ('safety_monitor', 'load_limit_n', 1e5),
    ('hw_interface', 'retract_speed_m_s', 50.0),
    ('program_sequencer', 'max_force_rate_n_s', -1.0),
    ('program_sequencer', 'pause_force_n', math.inf),
]
RECORDED = {
    '/finger_commands': 'backhug_interfaces/msg/FingerCommands',
    '/safety/status': ('backhug_interfaces/msg/SafetyStatus', 'LATCHED_QOS'),
    '/hardware/status': 'backhug_interfaces/msg/HardwareStatus',
}


def mutate_program(rng: random.Random) -> str:
    """A program file made invalid (or unparseable) by one random mutation."""
    from backhug_programs.library import find_program

    text = find_program(rng.choice(['demo', 'full_back', 'lower_back'])).text
    mutations = [
        lambda t: t.replace('force_n: ', 'force_n: 9', 1),
        lambda t: t.replace('frequency_hz: ', 'frequency_hz: 1', 1),
        lambda t: t.replace('duration_s: ', 'duration_s: -', 1),
        lambda t: t.replace('region: ', 'region: X', 1),
        lambda t: t.replace('pattern: ', 'pattern: moonwalk_', 1),
        lambda t: t.replace('phases:', 'phasez:', 1),
        lambda t: t[: rng.randrange(len(t))] + ': [unclosed',
        lambda t: t.replace('force_n: ', 'force_n: .nan #', 1),
        lambda t: '\x1f' + t,
        lambda t: 'id: x\nphases: []\n',
    ]
    return rng.choice(mutations)(text)


class Campaign:
    def __init__(self, family: str, folder: Path, seed: int, only: list[str] = ()) -> None:
        from rclpy.action import ActionClient

        from backhug_description import load_description
        from backhug_interfaces.action import RunProgram

        self.family = family
        self.folder = folder / family
        self.folder.mkdir(parents=True)
        self.rng = random.Random(f'{seed}-{family}')
        self.kinds = [k for k in FAULTS_OF[family] if not only or k in only]
        joints = load_description('sim').joints
        self.lower = np.array([j.lower_m for j in joints])
        self.upper = np.array([j.upper_m for j in joints])
        self.emulator = None
        common = {'use_sim_time': family == 'sim'}
        overrides: dict = {
            'hw_interface': {'fault_injection': True, 'sim_speed': 1.0},
            'finger_controllers': dict(common),
            'safety_monitor': {'use_sim_time': False},
            'program_sequencer': dict(common),
        }
        if family == 'serial':
            self.emulator = harness.EmulatorProcess(self.folder)
            overrides['hw_interface'].update(
                backend='serial',
                serial_port=self.emulator.port,
                publish_clock=False,
                update_rate_hz=200.0,
            )
            overrides['finger_controllers']['update_rate_hz'] = 200.0
        self.nodes = harness.Nodes(self.folder, overrides, NODES)
        self.peer = harness.Peer(play_sequencer=False, name='fault_campaign')
        self.RunProgram = RunProgram
        self.action = ActionClient(self.peer.node, RunProgram, '/run_program')
        self.goal = None  # (goal handle, result future)
        self.nodes.start_all()

    # -- program --------------------------------------------------------------------------------

    def send_goal(self, program: str = 'full_back', program_yaml: str = ''):
        """Send a RunProgram goal; (handle, result future) or None."""
        from backhug_bringup.program_client import build_goal

        if not self.action.wait_for_server(timeout_sec=30):
            return None
        goal = build_goal(program, 0.6, 1.75, weight_kg=75.0)  # the default simulated user
        goal.program_yaml = program_yaml
        future = self.action.send_goal_async(goal)
        if not wait_for(future.done, 15):
            return None
        handle = future.result()
        if handle is None or not handle.accepted:
            return None
        return handle, handle.get_result_async()

    def result_of(self, goal, timeout_s: float):
        if goal is None or not wait_for(goal[1].done, timeout_s):
            return None
        return goal[1].result().result

    def running(self) -> bool:
        return self.goal is not None and not self.goal[1].done()

    def start_program(self) -> str:
        """'' when full_back runs and presses (some finger above 5 N), else why not."""
        if not self.running():
            self.goal = self.send_goal()
            if self.goal is None:
                return 'goal not accepted'
        wait_for(lambda: np.nanmax(self.loads()) > 5.0 or not self.running(), 15)
        if not self.running():
            result = self.result_of(self.goal, 1.0)
            return f'program ended: {result.reason[:200] if result is not None else "no result"}'
        if not np.nanmax(self.loads()) > 5.0:
            return 'running, but no finger above 5 N within 15 s'
        return ''

    def rerun(self, record: dict) -> bool:
        """Reset and run full_back again, pressing. Up to RERUN_ATTEMPTS, as an operator would
        retry when a second, unrelated stop undoes the reset (here: a spurious 100 ms serial link
        timeout on the loaded host); every failed attempt's reason is recorded."""
        failures = []
        for _ in range(RERUN_ATTEMPTS):
            self.goal = None
            if self.peer.ready(60):
                why = self.start_program()
            else:
                why = f'no OK safety status after resets for 60 s: {self.peer.safety()}'
            if not why:
                break
            failures.append(why)
            self.cancel_program()
        record['rerun_attempts'] = len(failures) + (len(failures) < RERUN_ATTEMPTS)
        if failures:
            record['rerun_failures'] = failures
        return len(failures) < RERUN_ATTEMPTS

    def cancel_program(self) -> None:
        if self.running():
            self.goal[0].cancel_goal_async()
            self.result_of(self.goal, 10)

    # -- device ---------------------------------------------------------------------------------

    def positions(self) -> np.ndarray:
        if self.emulator is not None:  # ground truth: the board's own device
            return self.emulator.positions()
        return self.peer.positions()

    def loads(self) -> np.ndarray:
        return self.peer.loads()

    def retracted(self, fault: str = '', finger: str = '', since: float = 0.0) -> bool:
        """Every finger below 1 mm. With an injected ``frozen_sensor`` the finger's position is
        the simulation's truth (heard after ``since``); a ``stalled_finger`` is jammed where it
        is: it is excused only under a latched safe stop (hw_interface or the board)."""
        if self.emulator is None and not self.nodes.alive('hw_interface'):
            return False  # no /joint_states to judge by
        positions = np.array(self.positions(), dtype=float)
        index = self.peer.names.index(finger) if finger else None
        if index is not None and fault == 'frozen_sensor' and self.emulator is None:
            truth = self.peer.true_positions(since)
            if truth is None:
                return False
            positions[index] = truth[index]
        if index is not None and fault == 'stalled_finger':
            hardware = self.peer.hardware
            if hardware is None or not hardware.safe_stopped:
                return False
            positions[index] = 0.0
        return bool(np.nanmax(positions) < RETRACTED_M)

    def sim_fault(self, command: str) -> None:
        if self.emulator is not None:
            self.emulator.control(command)
        else:
            self.peer.fault(command)

    def clear(self) -> None:
        if self.emulator is not None:
            for command in ('clear', 'estop off', 'corrupt 0', 'drop 0'):
                self.emulator.control(command)
        else:
            for command in ('clear', 'estop off', 'joint_states on'):
                self.peer.fault(command)

    def set_parameter(self, node: str, name: str, value: float) -> bool | None:
        """SetParameters on a node; its 'successful' (None: no answer)."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = self.peer.node.create_client(SetParameters, f'/{node}/set_parameters')
        try:
            if not client.wait_for_service(timeout_sec=10):
                return None
            value_msg = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            request = SetParameters.Request(parameters=[Parameter(name=name, value=value_msg)])
            future = client.call_async(request)
            if not wait_for(future.done, 10):
                return None
            return bool(future.result().results[0].successful)
        finally:
            self.peer.node.destroy_client(client)

    # -- one trial --------------------------------------------------------------------------------

    def trial(self, index: int) -> dict:
        from backhug_bringup.recorder import SessionRecorder, read_session

        fault = self.rng.choice(self.kinds)
        finger_draw = self.rng.random()  # drawn now: the sequence of choices stays seeded
        record: dict = {'trial': index, 'family': self.family, 'fault': fault, 'checks': {}}
        checks = record['checks']
        started = time.monotonic()
        self.nodes.ensure_running()
        if not self.peer.ready(60):
            record['note'] = 'not ready before the trial'
        # The recording starts before the program, as a session's does: a node killed at once
        # must not have been killed before the recorder discovered its publisher.
        path = self.folder / f'trial_{index:03d}.mcap'
        recorder = SessionRecorder(self.peer.node, path, RECORDED)
        record['program_pressing'] = not self.start_program()
        # A physical fault hits a finger that is pressing (a stalled finger at rest is harmless
        # and rightly not stopped); any finger when none presses.
        loads = self.loads()
        pressing = [n for n, f in zip(self.peer.names, loads, strict=False) if f > 5.0]
        candidates = pressing or self.peer.names
        finger = candidates[int(finger_draw * len(candidates))]
        record['finger_pressing'] = bool(pressing)
        t_fault = time.monotonic()
        detail = self.inject(fault, finger, record)
        record['detail'] = detail
        if fault == 'kill' and detail == 'hw_interface' and self.emulator is None:
            # The MuJoCo device lives in hw_interface: it dies with it. Judge the restarted one
            # (it must come back retracted and stay so until a reset).
            self.nodes.ensure_running()
            fresh = time.monotonic()
            ok = wait_for(
                lambda: (
                    bool(self.peer.joint_states)
                    and self.peer.joint_states[-1][0] > fresh
                    and self.retracted()
                ),
                RETRACT_BOUND_S + 30,
                0.05,
            )
            checks['stopped_in_bound'] = ok
            record['stop_s'] = round(time.monotonic() - t_fault, 3) if ok else None
        elif fault in MUST_STOP:
            ok = wait_for(lambda: self.retracted(fault, finger, t_fault), RETRACT_BOUND_S, 0.05)
            checks['stopped_in_bound'] = ok
            record['stop_s'] = round(time.monotonic() - t_fault, 3) if ok else None
        elif fault in ('malformed_program', 'bad_parameter'):
            checks['refused'] = record.pop('refused', False)
        # end of the trial: clear, cancel, every finger retracted within the bound
        self.clear()
        self.cancel_program()
        self.nodes.ensure_running()
        t_end = time.monotonic()
        checks['ended_retracted'] = wait_for(self.retracted, RETRACT_BOUND_S + 20, 0.05)
        record['end_retract_s'] = round(time.monotonic() - t_end, 3)
        checks['limits'], record['limit_detail'] = self.limits_ok(started)
        recorder.close()
        try:
            session = read_session(path)
            checks['recording'] = bool(not session.truncated and session.on('/finger_commands'))
            if not checks['recording']:
                record['recording_error'] = (
                    f'truncated={session.truncated} error={session.error!r} '
                    f'counts={session.counts()}'
                )
        except Exception as exc:  # any failure to read is the finding
            checks['recording'] = False
            record['recording_error'] = f'{type(exc).__name__}: {exc}'
        path.unlink(missing_ok=True)
        checks['rerun'] = self.rerun(record)
        record['seconds'] = round(time.monotonic() - started, 1)
        record['survived'] = all(checks.values())
        return record

    def inject(self, fault: str, finger: str, record: dict) -> str:
        rng = self.rng
        if fault == 'kill':
            node = rng.choice(NODES)
            self.nodes.kill(node)
            return node
        if fault == 'frozen_sensor':
            self.sim_fault(f'freeze {finger}')
            return finger
        if fault == 'stalled_finger':
            self.sim_fault(f'stall {finger}')
            return finger
        if fault == 'load_spike':
            force = rng.choice([250, 400, 800])
            self.sim_fault(f'push {finger} {force} 1.0')
            return f'{finger} {force} N'
        if fault == 'estop':
            self.sim_fault('estop on')
            return 'board e-stop'
        if fault == 'serial_disconnect':
            seconds = rng.choice([0.5, 1.0, 2.0])
            self.emulator.control(f'disconnect {seconds}')
            return f'{seconds} s'
        if fault == 'corruption_burst':
            fraction = rng.choice([0.05, 0.2, 0.5])
            self.emulator.control(f'corrupt {fraction}')
            time.sleep(rng.choice([0.5, 1.0, 2.0]))
            self.emulator.control('corrupt 0')
            return f'{fraction}'
        if fault == 'malformed_program':
            self.cancel_program()
            wait_for(self.retracted, RETRACT_BOUND_S)
            text = mutate_program(rng)
            goal = self.send_goal(program_yaml=text)
            result = self.result_of(goal, 10)
            moved = not wait_for(lambda: not self.retracted(), 1.0) if result else False
            record['refused'] = bool(
                result is not None and result.outcome == self.RunProgram.Result.REJECTED and moved
            )
            reason = result.reason if result is not None else 'no result'
            return f'{text[:40]!r} -> {reason[:120]}'
        if fault == 'bad_parameter':
            node, name, value = rng.choice(BAD_PARAMETERS)
            name = name.format(finger=finger)
            successful = self.set_parameter(node, name, value)
            record['refused'] = successful is False
            return f'{node} {name}={value} successful={successful}'
        if fault == 'nan_setpoints':
            values = np.zeros(len(self.peer.names))
            chosen = rng.sample(range(len(values)), rng.randint(1, len(values)))
            values[chosen] = math.nan
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                self.peer.publish_setpoints(values)
                time.sleep(0.01)
            return f'{len(chosen)} fingers NaN for 1 s'
        raise ValueError(fault)

    def limits_ok(self, since: float) -> tuple[bool, str]:
        problems = []
        for command in [c for c in list(self.peer.commands) if c[0] >= since]:
            position = np.asarray(command[2])
            if position.shape != self.upper.shape:
                problems.append(f'command of {position.size} fingers')
            elif not np.all(np.isfinite(position)):
                problems.append('non-finite /finger_commands')
            elif np.any(position < self.lower - 1e-9) or np.any(position > self.upper + 1e-9):
                problems.append(f'/finger_commands outside travel: max {position.max():.4f}')
        if self.emulator is not None:
            for _, targets, _ in self.emulator.commands_since(since):
                if not np.all(np.isfinite(targets)) or np.any(targets > self.upper + 1e-9):
                    problems.append(f'COMMAND at the board outside travel: {targets.max()}')
                elif np.any(targets < self.lower - 1e-9):
                    problems.append(f'COMMAND at the board below travel: {targets.min()}')
        return not problems, '; '.join(sorted(set(problems)))[:300]

    def close(self) -> None:
        self.cancel_program()
        self.peer.close()
        self.nodes.stop_all()
        if self.emulator is not None:
            self.emulator.stop()


def summarise(records: list[dict], meta: dict) -> dict:
    by_type: dict = {}
    for r in records:
        key = f'{r["family"]}/{r["fault"]}'
        entry = by_type.setdefault(
            key, {'trials': 0, 'survived': 0, 'violations': 0, 'failed_checks': Counter()}
        )
        entry['trials'] += 1
        entry['survived'] += int(r['survived'])
        entry['violations'] += int(not r['survived'])
        entry['failed_checks'].update(k for k, v in r['checks'].items() if not v)
        stops = [r.get('stop_s') for r in records if f'{r["family"]}/{r["fault"]}' == key]
        stops = [s for s in stops if s is not None]
        if stops:
            entry['stop_s'] = harness.stats(stops)
    for entry in by_type.values():
        entry['failed_checks'] = dict(entry['failed_checks'])
    return {
        **meta,
        'trials': len(records),
        'survived': sum(r['survived'] for r in records),
        'violations': sum(not r['survived'] for r in records),
        # A failed 'rerun' alone is availability (the system stayed safe but would not run
        # again in time), every other failed check is a safety violation.
        'safety_violations': sum(
            any(not v for k, v in r['checks'].items() if k != 'rerun') for r in records
        ),
        # Reruns that needed a second reset (the first undone by an unrelated stop).
        'reruns_retried': sum(r.get('rerun_attempts', 1) > 1 for r in records),
        'faults': by_type,
        'records': records,
    }


def table(summary: dict) -> str:
    lines = [
        f'{"fault":32} {"trials":>6} {"survived":>8} {"violations":>10}  failed checks',
    ]
    for key, entry in sorted(summary['faults'].items()):
        lines.append(
            f'{key:32} {entry["trials"]:6d} {entry["survived"]:8d} {entry["violations"]:10d}  '
            f'{entry["failed_checks"] or ""}'
        )
    lines.append(
        f'{"total":32} {summary["trials"]:6d} {summary["survived"]:8d} '
        f'{summary["violations"]:10d}  safety violations (all but rerun): '
        f'{summary["safety_violations"]}; reruns that needed a second reset: '
        f'{summary["reruns_retried"]}'
    )
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--trials', type=int, default=200)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--families', default='sim,serial')
    parser.add_argument('--out', type=Path, default=HERE / 'faults.json')
    parser.add_argument(
        '--faults', default='', help='only these fault types, comma-separated (default: all)'
    )
    parser.add_argument('--max-minutes', type=float, default=0.0, help='stop early (0: never)')
    args = parser.parse_args(argv)
    only = [f for f in args.faults.split(',') if f]
    unknown = sorted(set(only) - set(SIM_FAULTS) - set(SERIAL_FAULTS))
    if unknown:
        parser.error(
            f'unknown fault types {unknown}: choose from {sorted({*SIM_FAULTS, *SERIAL_FAULTS})}'
        )
    if set(args.families.split(',')) - set(FAULTS_OF):
        parser.error(f'--families takes {",".join(FAULTS_OF)}, got {args.families!r}')
    harness.reserve_domain()
    families = [
        f for f in args.families.split(',') if any(not only or k in only for k in FAULTS_OF[f])
    ]
    # Split the trials between the families (sim gets the remainder).
    shares = {f: args.trials // len(families) for f in families}
    shares[families[0]] += args.trials - sum(shares.values())
    meta = {
        'seed': args.seed,
        'trials_asked': args.trials,
        'machine': harness.machine(),
        'retract_bound_s': RETRACT_BOUND_S,
        'faults_asked': only or 'all',
    }
    records: list[dict] = []
    started = time.monotonic()
    deadline = started + args.max_minutes * 60 if args.max_minutes else math.inf
    with tempfile.TemporaryDirectory(prefix='backhug_faults_') as tmp:
        for number, family in enumerate(families):
            per_family = max(1, int(shares[family]))
            # each family gets its share of the time left
            share_end = time.monotonic() + (deadline - time.monotonic()) / (len(families) - number)
            campaign = Campaign(family, Path(tmp), args.seed, only)
            if campaign.emulator is not None:
                meta['emulator_niceness'] = campaign.emulator.niceness
            try:
                for _ in range(per_family):
                    if time.monotonic() > share_end:
                        break
                    record = campaign.trial(len(records))
                    records.append(record)
                    print(
                        f'[{len(records):3d}] {family:6} {record["fault"]:18} '
                        f'{record["detail"][:50]:50} {"ok" if record["survived"] else "VIOLATION"}'
                        f' {"" if record["survived"] else record["checks"]} {record["seconds"]} s',
                        flush=True,
                    )
                    summary = summarise(records, meta)
                    summary['elapsed_s'] = round(time.monotonic() - started, 1)
                    args.out.write_text(json.dumps(summary, indent=1, default=str) + '\n')
            finally:
                campaign.close()
    summary = summarise(records, meta)
    summary['elapsed_s'] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(summary, indent=1, default=str) + '\n')
    print(table(summary))
    print(f'{summary["elapsed_s"]:.0f} s; written to {args.out}')
    return 1 if summary['violations'] else 0


if __name__ == '__main__':
    sys.exit(main())
