"""Session report: one picture and a summary a physiotherapist reads after a treatment.

From a session recording (backhug_bringup.recorder, MCAP) it draws, on one time axis:

1. the force on every finger over time (heat map, N; rows = fingers, head end at the top),
2. how well the fingers followed the program: mean setpoint vs mean measured load of the fingers
   that were asked to push, and the RMS tracking error,
3. the safety state (OK / WARNING / FAULT / ESTOP) with the reasons of each event,

with the program's phases shaded on all three, and a summary::

    summary = make_report('session.mcap', 'report.png')
    print(summary_text(summary))

Regions: the finger rows are split in three equal groups, head to tail: upper, mid and lower back
(with the default 13 rows at 35 mm from about T1, roughly T1-T4, T5-T10 and T11-L5). Mean loads
count only samples in contact (load above ``CONTACT_THRESHOLD_N``): the pressure the user felt,
not the time a finger rested.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from backhug_bringup.recorder import (
    PROGRAM_FEEDBACK_TYPE,
    PROGRAM_RESULT_TYPE,
    RecorderError,
    read_session,
)

CONTACT_THRESHOLD_N = 2.0
REGIONS = ('upper_back', 'mid_back', 'lower_back')
SAFETY_STATES = {0: 'OK', 1: 'WARNING', 2: 'FAULT', 3: 'ESTOP'}
OUTCOMES = {0: 'completed', 1: 'cancelled', 2: 'aborted', 3: 'rejected'}
_FINGER = re.compile(r'finger_([lr])_(\d+)_joint$')
_MAX_HEATMAP_COLUMNS = 600
_REPORT_TOPICS = ('/joint_states', '/finger_setpoints', '/safety/status')
# Program feedback and results are found by type, on whichever topic they were recorded: the
# action's own feedback topic (FeedbackMessage) or one the supervisor logged (Feedback, Result).
PROGRAM_BARE_FEEDBACK_TYPE = 'backhug_interfaces/action/RunProgram_Feedback'
_REPORT_TYPES = (PROGRAM_FEEDBACK_TYPE, PROGRAM_BARE_FEEDBACK_TYPE, PROGRAM_RESULT_TYPE)


def _feedback(session) -> list[tuple[int, Any]]:
    """(log time, RunProgram Feedback) of every recorded feedback, in recording order."""
    found = []
    for recorded in session.messages:
        if recorded.type_name == PROGRAM_FEEDBACK_TYPE:
            found.append((recorded.log_time_ns, recorded.message.feedback))
        elif recorded.type_name == PROGRAM_BARE_FEEDBACK_TYPE:
            found.append((recorded.log_time_ns, recorded.message))
    return found


def _results(session) -> list[Any]:
    return [m.message for m in session.messages if m.type_name == PROGRAM_RESULT_TYPE]


class ReportError(ValueError):
    """The recording cannot make a report (missing, unreadable, or without joint states)."""


def _finger_row(name: str) -> tuple[str, int] | None:
    match = _FINGER.search(name)
    return (match.group(1), int(match.group(2))) if match else None


def regions_of(names: list[str]) -> dict[str, list[int]]:
    """Finger indices per region (upper/mid/lower back): rows split in three, head to tail."""
    rows = sorted({r[1] for r in map(_finger_row, names) if r})
    groups = np.array_split(np.array(rows, dtype=int), len(REGIONS)) if rows else []
    region_of_row = {int(row): REGIONS[i] for i, group in enumerate(groups) for row in group}
    result: dict[str, list[int]] = {region: [] for region in REGIONS}
    for index, name in enumerate(names):
        parsed = _finger_row(name)
        if parsed:
            result[region_of_row[parsed[1]]].append(index)
    return result


_regions_of = regions_of  # the name backhug run used first


def _short(name: str) -> str:
    parsed = _finger_row(name)
    return f'{parsed[0].upper()}{parsed[1]:02d}' if parsed else name


def _series(session, t0_ns: int) -> dict[str, Any]:
    """Arrays of the session on one time axis (s since the first joint state)."""
    joint_messages = session.on('/joint_states')
    names = list(joint_messages[0].message.name)
    index = {name: i for i, name in enumerate(names)}
    times = []
    efforts = []
    for recorded in joint_messages:
        msg = recorded.message
        row = np.full(len(names), np.nan)
        for name, effort in zip(msg.name, msg.effort, strict=False):
            if name in index:
                row[index[name]] = effort
        times.append((recorded.log_time_ns - t0_ns) * 1e-9)
        efforts.append(row)
    setpoint_times = []
    setpoints = []
    for recorded in session.on('/finger_setpoints'):
        row = np.zeros(len(names))
        for name, force in zip(recorded.message.name, recorded.message.force_n, strict=False):
            if name in index:
                row[index[name]] = force
        setpoint_times.append((recorded.log_time_ns - t0_ns) * 1e-9)
        setpoints.append(row)
    return {
        'names': names,
        't': np.array(times),
        'effort': np.array(efforts).reshape(len(times), len(names)),
        'setpoint_t': np.array(setpoint_times),
        'setpoint': np.array(setpoints).reshape(len(setpoint_times), len(names)),
    }


def _phases(session, t0_ns: int, end_s: float) -> list[dict[str, Any]]:
    """Phase intervals from the program feedback (a new interval when the phase index changes)."""
    phases: list[dict[str, Any]] = []
    for log_time_ns, feedback in _feedback(session):
        t = (log_time_ns - t0_ns) * 1e-9
        if not phases or phases[-1]['index'] != feedback.phase_index:
            if phases:
                phases[-1]['end_s'] = t
            phases.append(
                {'index': int(feedback.phase_index), 'name': feedback.phase_name, 'start_s': t}
            )
    if phases:
        phases[-1]['end_s'] = end_s
    return phases


def _safety_events(session, t0_ns: int) -> list[dict[str, Any]]:
    """Every change of the safety state, and every new latch (the first status is a change).

    Reasons are those at the change; their wording may change while the state holds (a timer
    in the text) without making a new event.
    """
    events = []
    previous = None
    for recorded in session.on('/safety/status'):
        msg = recorded.message
        latched_at = (int(msg.latched_at.sec), int(msg.latched_at.nanosec))
        key = (msg.state, latched_at)
        if key != previous:
            events.append(
                {
                    'time_s': round((recorded.log_time_ns - t0_ns) * 1e-9, 3),
                    'state': SAFETY_STATES.get(msg.state, str(msg.state)),
                    'reasons': list(msg.reasons),
                }
            )
            previous = key
    return events


def _ready_time(events: list[dict[str, Any]]) -> float | None:
    """When the safety monitor first allowed motion (OK or WARNING); None if it never did."""
    return next((e['time_s'] for e in events if e['state'] in ('OK', 'WARNING')), None)


def _completion(session) -> dict[str, Any]:
    results = _results(session)
    feedback = _feedback(session)
    if results:
        result = results[-1]
        return {
            'outcome': OUTCOMES.get(result.outcome, str(result.outcome)),
            'completed_fraction': round(float(result.completed_fraction), 3),
            'reason': result.reason,
            'program_duration_s': round(float(result.duration_s), 1),
        }
    if feedback:
        last = feedback[-1][1]
        return {
            'outcome': 'unknown (no result recorded)',
            'completed_fraction': round(float(last.progress), 3),
            'reason': '',
            'program_duration_s': round(float(last.elapsed_s), 1),
        }
    return {
        'outcome': 'no program',
        'completed_fraction': 0.0,
        'reason': '',
        'program_duration_s': 0.0,
    }


def _region_loads(series: dict[str, Any]) -> dict[str, dict[str, float]]:
    loads = {}
    for region, indices in regions_of(series['names']).items():
        if not indices:
            continue
        values = series['effort'][:, indices]
        values = values[np.isfinite(values)]
        contact = values[values > CONTACT_THRESHOLD_N]
        loads[region] = {
            'peak_n': round(float(values.max()), 1) if values.size else 0.0,
            'mean_n': round(float(contact.mean()), 1) if contact.size else 0.0,
            'contact_fraction': round(contact.size / values.size, 3) if values.size else 0.0,
        }
    return loads


def _tracking(series: dict[str, Any]) -> dict[str, np.ndarray]:
    """Setpoints sampled at the joint-state times (zero-order hold) and the error vs load."""
    t = series['t']
    if not len(series['setpoint_t']):
        zeros = np.zeros_like(series['effort'])
        return {'setpoint': zeros, 'active': zeros.astype(bool)}
    index = np.searchsorted(series['setpoint_t'], t, side='right') - 1
    setpoint = np.where(index[:, None] >= 0, series['setpoint'][np.clip(index, 0, None)], 0.0)
    return {'setpoint': setpoint, 'active': setpoint > 0.0}


def _bin_columns(t: np.ndarray, values: np.ndarray, bins: int) -> np.ndarray:
    """Mean of ``values`` (time x fingers) in at most ``bins`` equal time bins."""
    if len(t) <= bins:
        return values
    edges = np.linspace(t[0], t[-1], bins + 1)
    which = np.clip(np.searchsorted(edges, t, side='right') - 1, 0, bins - 1)
    sums = np.zeros((bins, values.shape[1]))
    np.add.at(sums, which, np.nan_to_num(values))
    counts = np.bincount(which, minlength=bins)[:, None]
    with np.errstate(invalid='ignore', divide='ignore'):
        means = sums / counts
    return means


def make_report(mcap_path: str | Path, out_png: str | Path) -> dict[str, Any]:
    """Read a session recording, draw the report PNG, return the summary (JSON-serialisable)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    mcap_path = Path(mcap_path)
    try:
        session = read_session(mcap_path, topics=_REPORT_TOPICS, types=_REPORT_TYPES)
    except RecorderError as exc:
        raise ReportError(str(exc)) from exc
    joint_messages = session.on('/joint_states')
    if not joint_messages:
        raise ReportError(
            f'{mcap_path}: no /joint_states in the recording (topics: '
            f'{sorted(session.topics) or "none"}'
            + (f'; file truncated: {session.error})' if session.truncated else ')')
        )
    t0_ns = joint_messages[0].log_time_ns
    series = _series(session, t0_ns)
    t = series['t']
    duration_s = float(t[-1]) if len(t) else 0.0
    phases = _phases(session, t0_ns, duration_s)
    events = _safety_events(session, t0_ns)
    tracking = _tracking(series)
    setpoint = tracking['setpoint']
    active = tracking['active']
    with np.errstate(invalid='ignore', divide='ignore'):
        count = active.sum(axis=1)
        mean_setpoint = np.where(count > 0, (setpoint * active).sum(axis=1) / count, np.nan)
        load = np.nan_to_num(series['effort'])
        mean_load = np.where(count > 0, (load * active).sum(axis=1) / count, np.nan)
        rms_error = np.where(
            count > 0, np.sqrt((((load - setpoint) * active) ** 2).sum(axis=1) / count), np.nan
        )
    metadata = session.metadata.get('session', {})
    # The monitor starts in FAULT until every node and stream is there: that is start-up, not a
    # fault of the session. Faults count from the first OK (all of them if it never came).
    ready_s = _ready_time(events)
    first_ok = next((i for i, e in enumerate(events) if e['state'] in ('OK', 'WARNING')), 0)
    faults = [e for e in events[first_ok:] if e['state'] in ('FAULT', 'ESTOP')]
    summary = {
        'recording': str(mcap_path),
        'program': metadata.get('program') or (phases and 'unnamed program') or 'none',
        'intensity': float(metadata['intensity']) if 'intensity' in metadata else None,
        'duration_s': round(duration_s, 1),
        'completion': _completion(session),
        'phases': [
            {'name': p['name'], 'start_s': round(p['start_s'], 1), 'end_s': round(p['end_s'], 1)}
            for p in phases
        ],
        'regions': _region_loads(series),
        'peak_load_n': round(float(np.nanmax(series['effort'])), 1)
        if np.isfinite(series['effort']).any()
        else 0.0,
        'rms_tracking_error_n': round(float(np.sqrt(np.nanmean(rms_error**2))), 1)
        if np.isfinite(rms_error).any()
        else None,
        'faults': faults,
        'ready_at_s': ready_s,
        'warnings': sum(1 for e in events if e['state'] == 'WARNING'),
        'recording_truncated': session.truncated,
    }

    figure, axes = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, gridspec_kw={'height_ratios': [3, 2, 1]}
    )
    heat_axis, track_axis, safety_axis = axes
    binned = _bin_columns(t, series['effort'], _MAX_HEATMAP_COLUMNS)
    # Left column head to tail, then right: as the device reads from above.
    extent = [t[0], t[-1] if t[-1] > t[0] else t[0] + 1.0, len(series['names']) - 0.5, -0.5]
    image = heat_axis.imshow(
        binned.T,
        aspect='auto',
        extent=extent,
        cmap='inferno',
        vmin=0.0,
        vmax=max(1.0, float(np.nanmax(binned)) if np.isfinite(binned).any() else 1.0),
        interpolation='nearest',
    )
    heat_axis.set_yticks(range(len(series['names'])))
    heat_axis.set_yticklabels([_short(n) for n in series['names']], fontsize=6)
    heat_axis.set_ylabel('finger (L/R, row from head)')
    heat_axis.set_title('Force on each finger (N)', pad=14)  # room for the phase names
    figure.colorbar(image, ax=axes.tolist(), location='right', shrink=0.4, label='load (N)')

    track_axis.plot(t, mean_setpoint, label='asked (mean setpoint)', color='tab:blue')
    track_axis.plot(t, mean_load, label='measured (mean load)', color='tab:orange')
    track_axis.plot(t, rms_error, label='RMS error', color='tab:red', linewidth=0.8)
    track_axis.set_ylabel('force (N)')
    track_axis.set_title('Tracking: fingers asked to push, setpoint vs measured load')
    track_axis.legend(loc='upper right', fontsize=8)
    track_axis.grid(alpha=0.3)

    states = session.on('/safety/status')
    if states:
        state_t = [(m.log_time_ns - t0_ns) * 1e-9 for m in states] + [duration_s]
        state_v = [m.message.state for m in states]
        safety_axis.step(state_t, [*state_v, state_v[-1]], where='post', color='black')
    for event in events:
        # Before the first joint state is start-up (the monitor waits for the streams).
        if event['state'] != 'OK' and event['time_s'] >= 0.0:
            colour = 'tab:orange' if event['state'] == 'WARNING' else 'tab:red'
            for axis in axes:
                axis.axvline(event['time_s'], color=colour, linestyle='--', linewidth=1)
            safety_axis.annotate(
                '; '.join(event['reasons'])[:60] or event['state'],
                (event['time_s'], 2.5),
                fontsize=7,
                color=colour,
                rotation=0,
            )
    safety_axis.set_yticks(list(SAFETY_STATES), list(SAFETY_STATES.values()))
    safety_axis.set_ylim(-0.5, 3.5)
    safety_axis.set_title('Safety state')
    safety_axis.set_xlabel('time since the first joint state (s)')
    safety_axis.set_xlim(0.0, max(duration_s, 1.0))

    for i, phase in enumerate(phases):
        for axis in axes[1:]:
            axis.axvspan(phase['start_s'], phase['end_s'], color=f'C{i % 10}', alpha=0.08)
        heat_axis.annotate(
            phase['name'],
            (phase['start_s'], -0.5),
            xytext=(2, 2),
            textcoords='offset points',
            fontsize=8,
            annotation_clip=False,
        )
        heat_axis.axvline(phase['start_s'], color='white', linewidth=0.8)

    completion = summary['completion']
    figure.suptitle(
        f'BackHug session: {summary["program"]}  |  '
        + (f'{duration_s / 60:.1f} min' if duration_s >= 120 else f'{duration_s:.0f} s')
        + '  |  '
        f'{completion["outcome"]} ({completion["completed_fraction"] * 100:.0f} %)  |  '
        f'faults: {len(faults)}' + ('  |  RECORDING TRUNCATED' if session.truncated else ''),
        fontsize=12,
    )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    plt.close(figure)
    summary['report'] = str(out_png)
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as a few lines of plain text."""
    completion = summary['completion']
    lines = [
        f'Program:     {summary["program"]}'
        + (f' at intensity {summary["intensity"]:.2f}' if summary.get('intensity') else ''),
        f'Duration:    {summary["duration_s"]:.1f} s recorded',
        f'Completion:  {completion["outcome"]}, {completion["completed_fraction"] * 100:.0f} %'
        + (f' ({completion["reason"]})' if completion['reason'] else ''),
    ]
    if summary['phases']:
        lines.append('Phases:      ' + ', '.join(p['name'] for p in summary['phases']))
    for region, loads in summary['regions'].items():
        lines.append(
            f'{region.replace("_", " ").capitalize():<12} peak {loads["peak_n"]:.0f} N, '
            f'mean {loads["mean_n"]:.0f} N in contact ({loads["contact_fraction"] * 100:.0f} % '
            'of the time)'
        )
    if summary.get('rms_tracking_error_n') is not None:
        lines.append(f'Tracking:    RMS error {summary["rms_tracking_error_n"]:.1f} N')
    if summary.get('ready_at_s') is None and summary['faults']:
        lines.append('Start-up:    the safety monitor never allowed motion')
    if summary['faults']:
        for fault in summary['faults']:
            reasons = '; '.join(fault['reasons']) or 'no reason given'
            lines.append(f'Fault:       {fault["state"]} at {fault["time_s"]:.1f} s: {reasons}')
    else:
        lines.append('Faults:      none')
    if summary['warnings']:
        lines.append(f'Warnings:    {summary["warnings"]}')
    if summary['recording_truncated']:
        lines.append('Note:        the recording was cut short (the recorder did not close)')
    if summary.get('report'):
        lines.append(f'Report:      {summary["report"]}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """``backhug report SESSION.mcap [--out report.png] [--json summary.json]``."""
    parser = argparse.ArgumentParser(
        prog='backhug report', description='Draw the report of a recorded session.'
    )
    parser.add_argument('session', type=Path, help='session recording (.mcap)')
    parser.add_argument(
        '--out', type=Path, help='report picture (default: report.png next to the recording)'
    )
    parser.add_argument('--json', type=Path, help='also write the summary as JSON to this file')
    args = parser.parse_args(argv)
    out = args.out or args.session.with_name('report.png')
    try:
        summary = make_report(args.session, out)
    except ReportError as exc:
        print(f'backhug report: {exc}', file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=_json_default), encoding='utf-8')
    print(summary_text(summary))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


if __name__ == '__main__':
    sys.exit(main())
