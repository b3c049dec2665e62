"""Spine map report: spinemap.json, spinemap.png and a text summary; the history trend plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from backhug_programs.spinemap.history import HistoryEntry
from backhug_programs.spinemap.model import SpineMapResult, segment_changes

JSON_NAME = 'spinemap.json'
PNG_NAME = 'spinemap.png'


def write_json(folder: Path, before: SpineMapResult | None, after: SpineMapResult | None) -> Path:
    """Write spinemap.json (before, after, per-segment change) atomically into ``folder``."""
    data: dict[str, Any] = {
        'before': before.to_dict() if before else None,
        'after': after.to_dict() if after else None,
        'change': segment_changes(before, after) if before and after else [],
    }
    path = Path(folder) / JSON_NAME
    temporary = path.with_suffix('.json.tmp')
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)
    return path


def read_json(folder_or_file: Path) -> tuple[SpineMapResult | None, SpineMapResult | None]:
    """Read (before, after) from a session folder or a spinemap.json; ValueError if unusable."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / JSON_NAME
    if not path.is_file():
        raise ValueError(f'no spine map at {path}')
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f'{path}: not valid JSON ({error})') from error
    before = SpineMapResult.from_dict(data['before']) if data.get('before') else None
    after = SpineMapResult.from_dict(data['after']) if data.get('after') else None
    if before is None and after is None:
        raise ValueError(f'{path}: holds neither a before nor an after scan')
    return before, after


def summary_text(before: SpineMapResult | None, after: SpineMapResult | None) -> str:
    """A few lines a user and their physiotherapist can read."""
    lines = []
    for label, scan in (('before', before), ('after', after)):
        if scan is None:
            continue
        measured = sum(f.valid for f in scan.fingers)
        state = 'complete' if scan.complete else f'INCOMPLETE ({scan.reason})'
        lines.append(
            f'Scan {label} ({scan.stamp}, user {scan.user_id}): {state}, '
            f'{measured}/{len(scan.fingers)} fingers measured, '
            f'stiffest: {", ".join(scan.stiffest()) or "none"}'
        )
    if before and after:
        changes = segment_changes(before, after)
        if changes:
            mean = float(np.mean([c['change_percent'] for c in changes]))
            largest = min(changes, key=lambda c: c['change_percent'])
            lines.append(
                f'Mean stiffness change {mean:+.1f} %; largest reduction at '
                f'{largest["level"]} ({"left" if largest["side"] == "l" else "right"}) '
                f'{largest["change_percent"]:+.1f} %'
            )
    return '\n'.join(lines)


def _side_values(scan: SpineMapResult, levels: list[str], side: str) -> tuple[np.ndarray, ...]:
    by_level = {s.level: s for s in scan.segments}
    value_attr = 'stiffness_left_n_per_mm' if side == 'l' else 'stiffness_right_n_per_mm'
    error_attr = 'uncertainty_left_n_per_mm' if side == 'l' else 'uncertainty_right_n_per_mm'
    values = np.array(
        [getattr(by_level[lv], value_attr) if lv in by_level else np.nan for lv in levels]
    )
    errors = np.array(
        [getattr(by_level[lv], error_attr) if lv in by_level else np.nan for lv in levels]
    )
    return values, np.nan_to_num(errors)


def render_png(
    folder_or_path: Path, before: SpineMapResult | None, after: SpineMapResult | None
) -> Path:
    """Render the spine map (stiffness per level and side, before vs after, change) to PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    path = Path(folder_or_path)
    if path.is_dir():
        path = path / PNG_NAME
    reference = before or after
    assert reference is not None
    levels = [s.level for s in reference.segments]
    y = np.arange(len(levels))
    has_change = before is not None and after is not None
    fig, axes = plt.subplots(
        1, 3 if has_change else 2, figsize=(13 if has_change else 9, 7), sharey=True
    )
    for ax, side, title in ((axes[0], 'l', 'Left of spine'), (axes[1], 'r', 'Right of spine')):
        height = 0.38
        for offset, scan, label, color in (
            (-height / 2, before, 'before', '#9aa5b1'),
            (height / 2, after, 'after', '#1f77b4'),
        ):
            if scan is None:
                continue
            values, errors = _side_values(scan, levels, side)
            ax.barh(y + offset, values, height, xerr=errors, label=label, color=color, capsize=2)
        ax.set_title(title)
        ax.set_xlabel('stiffness (N/mm)')
        ax.grid(axis='x', alpha=0.3)
    axes[0].set_yticks(y, levels)
    axes[0].invert_yaxis()
    axes[0].set_ylabel('spinal level (head at top)')
    axes[0].legend(loc='lower right')
    stiffest = set(reference.stiffest())
    for tick in axes[0].get_yticklabels():
        if tick.get_text() in stiffest:
            tick.set_color('#d62728')
            tick.set_fontweight('bold')
    if has_change:
        ax = axes[2]
        for side, color, offset in (('l', '#2ca02c', -0.2), ('r', '#ff7f0e', 0.2)):
            b, _ = _side_values(before, levels, side)
            a, _ = _side_values(after, levels, side)
            with np.errstate(invalid='ignore', divide='ignore'):
                change = 100.0 * (a - b) / b
            ax.barh(y + offset, change, 0.38, color=color, label='left' if side == 'l' else 'right')
        ax.axvline(0.0, color='black', linewidth=0.8)
        ax.set_title('Change after the session')
        ax.set_xlabel('change (%)')
        ax.legend(loc='lower right')
        ax.grid(axis='x', alpha=0.3)
    user = reference.user_id or 'unknown user'
    incomplete = [s for s in (before, after) if s is not None and not s.complete]
    note = '  —  INCOMPLETE SCAN' if incomplete else ''
    fig.suptitle(f'Spine map of {user} (stiffest levels in red){note}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_history_png(entries: list[HistoryEntry], out: Path, user_id: str) -> Path:
    """Plot each level's mean stiffness across the stored scans of one user."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    levels: list[str] = []
    for entry in entries:
        for segment in entry.scan.segments:
            if segment.level not in levels:
                levels.append(segment.level)
    fig, ax = plt.subplots(figsize=(10, 5.5))
    x = np.arange(len(entries))
    cmap = plt.get_cmap('viridis', max(len(levels), 1))
    for index, level in enumerate(levels):
        values = []
        for entry in entries:
            match = [s for s in entry.scan.segments if s.level == level]
            values.append(match[0].mean_n_per_mm if match else math.nan)
        if np.all(np.isnan(values)):
            continue
        ax.plot(x, values, marker='o', color=cmap(index), label=level)
    ax.set_xticks(x, [f'{e.stamp[:16]}\n{e.kind}' for e in entries], fontsize=7)
    ax.set_ylabel('mean stiffness (N/mm)')
    ax.set_title(f'Back stiffness over time: {user_id}')
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
