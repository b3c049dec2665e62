"""backhug_render_device: render a picture of the device from its URDF with MuJoCo (offscreen).

The URDF of ``load_description`` is loaded with ``mujoco.MjSpec.from_string`` (it carries a
``<mujoco><compiler discardvisual="false" .../>`` extension, so the visual geometry is kept); the
tool adds a floor, lights and a free camera, poses the fingers and writes a PNG. It is a picture
only: the physics model with a user lying on the fingers is backhug_hw_interface's.

Offscreen rendering needs an OpenGL backend, chosen by MUJOCO_GL before mujoco is imported:
``egl`` first; if that fails the tool runs itself again with ``osmesa``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from backhug_description.description import HARDWARE_CHOICES, Description, load_description
from backhug_description.errors import DescriptionError

GL_BACKENDS = ('egl', 'osmesa')
POSES = ('wave', 'retracted', 'extended')
_FALLBACK_GUARD = 'BACKHUG_RENDER_FALLBACK'


def finger_pose(description: Description, pose: str) -> np.ndarray:
    """Joint positions (m, canonical order) for a named pose: wave, retracted or extended."""
    stroke = description.config.stroke_m
    rows = np.array([joint.row for joint in description.joints], dtype=float)
    if pose == 'retracted':
        return np.zeros(len(rows))
    if pose == 'extended':
        return np.full(len(rows), stroke)
    if pose == 'wave':
        # One crest travelling down the spine: what a "wave" program looks like at one instant.
        phase = 2 * math.pi * (rows - 1) / max(description.config.rows, 2)
        return stroke * 0.5 * (1 + np.sin(phase))
    raise DescriptionError(f'pose must be one of {POSES}, got {pose!r}')


def build_scene_spec(description: Description):
    """MjSpec of the device plus floor, lights and an offscreen buffer; no physics changes."""
    import mujoco

    spec = mujoco.MjSpec.from_string(description.urdf)
    spec.visual.global_.offwidth = 1920
    spec.visual.global_.offheight = 1080
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    spec.add_texture(
        name='floor_grid',
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        rgb1=[0.82, 0.84, 0.86],
        rgb2=[0.74, 0.76, 0.79],
        width=256,
        height=256,
    )
    floor_material = spec.add_material(name='floor', texrepeat=[8, 8], reflectance=0.05)
    floor_material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = 'floor_grid'
    spec.worldbody.add_geom(
        name='render_floor',
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[2.0, 2.0, 0.05],
        pos=[description.config.length_m / 2, 0, 0],
        material='floor',
        contype=0,
        conaffinity=0,
    )
    spec.worldbody.add_light(pos=[0.2, 0.8, 2.0], dir=[0.1, -0.4, -1.0], castshadow=True)
    spec.worldbody.add_light(pos=[1.2, -0.8, 1.5], dir=[-0.4, 0.4, -1.0], castshadow=False)
    return spec


def render_device(
    description: Description,
    output: Path,
    pose: str = 'wave',
    width: int = 1280,
    height: int = 800,
) -> Path:
    """Render the device in a pose to a PNG file; return its path."""
    import matplotlib.image
    import mujoco

    model = build_scene_spec(description).compile()
    data = mujoco.MjData(model)
    for joint, position in zip(description.joints, finger_pose(description, pose), strict=True):
        data.qpos[model.jnt_qposadr[model.joint(joint.name).id]] = position
    mujoco.mj_forward(model, data)

    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    config = description.config
    camera.lookat[:] = [config.first_row_x_m + config.rows * config.row_pitch_m / 2, 0.0, 0.12]
    camera.distance = 0.8 * max(config.length_m, 0.6)
    camera.azimuth = 150.0  # from the foot end, on the user's right side
    camera.elevation = -30.0
    with mujoco.Renderer(model, height=height, width=width) as renderer:
        renderer.update_scene(data, camera=camera)
        pixels = renderer.render()
    if not pixels.any():
        raise RuntimeError('the renderer returned an all-black image')
    output.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(output, pixels)
    return output


def _default_output() -> Path:
    """docs/images/device.png of the workspace when run from it, else ./device.png."""
    for parent in Path(__file__).resolve().parents:
        if (parent / 'docs' / 'architecture.md').is_file():
            return parent / 'docs' / 'images' / 'device.png'
    return Path('device.png')


def main(argv: list[str] | None = None) -> int:
    """Command line entry point of backhug_render_device."""
    parser = argparse.ArgumentParser(
        prog='backhug_render_device', description='Render a picture of the BackHug device.'
    )
    parser.add_argument('-o', '--output', type=Path, help='PNG file (default docs/images/...)')
    parser.add_argument('--hardware', choices=HARDWARE_CHOICES, default='sim')
    parser.add_argument('--config', help='device config file (default config/device.yaml)')
    parser.add_argument('--rows', type=int, help='override the number of rows')
    parser.add_argument('--pose', choices=POSES, default='wave', help='finger positions')
    parser.add_argument('--width', type=int, default=1280)
    parser.add_argument('--height', type=int, default=800)
    args = parser.parse_args(argv)
    output = args.output or _default_output()

    os.environ.setdefault('MUJOCO_GL', GL_BACKENDS[0])
    try:
        description = load_description(args.hardware, args.config, rows=args.rows)
        render_device(description, output, args.pose, args.width, args.height)
    except DescriptionError as exc:
        print(f'backhug_render_device: {exc}', file=sys.stderr)
        return 2
    except Exception as exc:  # any GL failure: try the next backend
        backend = os.environ['MUJOCO_GL']
        remaining = GL_BACKENDS[GL_BACKENDS.index(backend) + 1 :] if backend in GL_BACKENDS else ()
        if not remaining or os.environ.get(_FALLBACK_GUARD):
            print(
                f'backhug_render_device: rendering with MUJOCO_GL={backend} failed: {exc}',
                file=sys.stderr,
            )
            return 1
        print(
            f'backhug_render_device: MUJOCO_GL={backend} failed ({exc}); trying {remaining[0]}',
            file=sys.stderr,
        )
        # The GL backend is fixed when mujoco is imported: run again in a fresh interpreter.
        env = dict(os.environ, MUJOCO_GL=remaining[0], **{_FALLBACK_GUARD: '1'})
        argv_out = [*(argv if argv is not None else sys.argv[1:])]
        if args.output is None:
            argv_out += ['--output', str(output)]
        command = [sys.executable, '-m', 'backhug_description.render', *argv_out]
        return subprocess.run(command, env=env).returncode
    print(f'backhug_render_device: wrote {output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
