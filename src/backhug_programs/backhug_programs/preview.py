"""A picture of a compiled program for a physiotherapist: which fingers press, how hard, when.

Top: heat map of the force on every finger over the session (rows labelled with the vertebra
over them for this user; left column above the right; the colour is the peak force in each time
bin, so an oscillation shows as its peak). Phases are marked and named. Middle: force of every
finger over time (each finger's peak per bin). Bottom: a few seconds from the middle of each
phase, so the pattern itself (press, alternation, wave, hold) can be read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backhug_programs.compiler import CompiledProgram

MAX_BINS = 600
SAMPLE_HZ = 20.0
DETAIL_S = 4.0
MAX_DETAILS = 10


def _binned_peak(compiled: CompiledProgram) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres s, peak force per bin and finger) over the whole program."""
    duration = compiled.duration_s
    times = np.arange(0.0, duration, 1.0 / SAMPLE_HZ)
    forces = compiled.trajectory(times)
    per_bin = max(1, int(np.ceil(times.size / MAX_BINS)))
    bins = int(np.ceil(times.size / per_bin))
    padded = np.zeros((bins * per_bin, forces.shape[1]))
    padded[: forces.shape[0]] = forces
    peaks = padded.reshape(bins, per_bin, -1).max(axis=1)
    centres = (np.arange(bins) + 0.5) * per_bin / SAMPLE_HZ
    return centres, peaks


def render_preview(compiled: CompiledProgram, out: Path | str, dpi: int = 110) -> Path:
    """Write the preview PNG of ``compiled`` to ``out``; returns the path."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    out = Path(out)
    program, model = compiled.program, compiled.model
    minutes = compiled.duration_s > 180.0
    scale, unit = (1 / 60.0, 'min') if minutes else (1.0, 's')
    centres, peaks = _binned_peak(compiled)
    n = len(compiled.joint_names)
    vmax = max(10.0, float(peaks.max()))

    # Finger order for the picture: left column head→tail, then right column head→tail.
    order = sorted(range(n), key=lambda i: (compiled.joint_sides[i] != 'l', compiled.joint_rows[i]))
    labels = []
    for i in order:
        side = 'L' if compiled.joint_sides[i] == 'l' else 'R'
        row = int(compiled.joint_rows[i])
        labels.append(f'{side} {model.level_of_row(row)} · row {row}')

    details = [p for p in compiled.phases if p.pattern != 'rest'][:MAX_DETAILS]
    fig = plt.figure(figsize=(14, 11), dpi=dpi)
    grid = GridSpec(3, max(1, len(details)), height_ratios=[3.2, 1.4, 1.2], hspace=0.45, figure=fig)
    heat = fig.add_subplot(grid[0, :])
    extent = (0.0, compiled.duration_s * scale, n - 0.5, -0.5)
    image = heat.imshow(
        peaks[:, order].T,
        aspect='auto',
        interpolation='nearest',
        cmap='magma',
        vmin=0.0,
        vmax=vmax,
        extent=extent,
    )
    heat.set_yticks(range(n))
    heat.set_yticklabels(labels, fontsize=7)
    rows = len({int(r) for r in compiled.joint_rows})
    heat.axhline(rows - 0.5, color='white', linewidth=1.5)
    for phase in compiled.phases:
        x = phase.start_s * scale
        heat.axvline(x, color='cyan', linewidth=0.8, alpha=0.8)
        heat.text(
            (phase.start_s + phase.end_s) / 2 * scale,
            -0.8,
            f'{phase.index + 1}. {phase.name}',
            rotation=30 if len(compiled.phases) > 4 else 0,
            ha='left' if len(compiled.phases) > 4 else 'center',
            va='bottom',
            fontsize=7.5,
        )
    heat.set_xlabel(f'time ({unit})')
    heat.set_ylabel('finger (side, vertebra over it, row)')
    bar = fig.colorbar(image, ax=heat, fraction=0.025, pad=0.01)
    bar.set_label('peak force per finger (N)')
    reach = f'; out of reach: {", ".join(compiled.out_of_reach)}' if compiled.out_of_reach else ''
    c7 = 'estimated' if model.c7_estimated else 'measured'
    fig.suptitle(
        f'{program.name} [{program.id}] — user {model.height_m:g} m (C7 {c7} at '
        f'{model.c7_position_m:+.3f} m from row 1), intensity {compiled.intensity:g}, summed '
        f'force <= {compiled.max_total_force_n:.0f} N{reach}',
        fontsize=11,
        y=0.995,
    )

    lines = fig.add_subplot(grid[1, :])
    colours = plt.get_cmap('viridis')
    for i in range(n):
        style = '-' if compiled.joint_sides[i] == 'l' else '--'
        colour = colours((compiled.joint_rows[i] - 1) / max(1, rows - 1))
        lines.plot(centres * scale, peaks[:, i], style, color=colour, linewidth=0.7)
    for phase in compiled.phases:
        lines.axvline(phase.start_s * scale, color='grey', linewidth=0.6, alpha=0.6)
    lines.set_xlim(0.0, compiled.duration_s * scale)
    lines.set_ylim(0.0, vmax * 1.05)
    lines.set_xlabel(f'time ({unit})')
    lines.set_ylabel('force (N)')
    lines.set_title(
        'force per finger (peak per time bin; colour = row head→tail, solid left, dashed right)',
        fontsize=9,
    )

    for k, phase in enumerate(details):
        ax = fig.add_subplot(grid[2, k])
        mid = (phase.start_s + phase.end_s) / 2.0
        span = min(DETAIL_S, phase.duration_s)
        t = np.linspace(mid - span / 2, mid + span / 2, 200)
        forces = compiled.trajectory(t)
        for i in phase.fingers:
            style = '-' if compiled.joint_sides[i] == 'l' else '--'
            colour = colours((compiled.joint_rows[i] - 1) / max(1, rows - 1))
            ax.plot(t - t[0], forces[:, i], style, color=colour, linewidth=0.8)
        ax.set_ylim(0.0, vmax * 1.05)
        ax.set_title(f'{phase.index + 1}. {phase.pattern}', fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel('s', fontsize=7)
        if k == 0:
            ax.set_ylabel('force (N)', fontsize=8)
    fig.savefig(out, dpi=dpi, bbox_inches='tight')
    plt.close(fig)
    return out
