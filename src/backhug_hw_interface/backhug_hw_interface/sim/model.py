"""Build the MuJoCo model: the device from its URDF plus a simulated user's torso lying on it.

The device (bed, pad, finger joints, tips) is the URDF of ``backhug_description`` loaded with
``mujoco.MjSpec.from_string``; nothing of its geometry is repeated here. Added to it:

- a position servo per finger joint (kp, damping ratio, force limit = the joint's effort limit,
  control range = its limits) and a touch sensor around each tip (the load cell);
- the torso: one rigid body on a vertical slide and a pitch hinge (x and y held, it lies still
  on the bed) carrying the trunk mass, with support spheres along the back curve at the sides
  of the finger columns that rest on the pad;
- under every finger a small tissue body on a vertical slide joint inside the torso, with the
  stiffness and damping of that row: the finger tip touches only this body, so the load-
  displacement slope a finger measures is that joint stiffness in series with a contact that
  is much stiffer.

Collision filtering (contype/conaffinity bits): the pad touches only the torso supports (bit 0)
and the tips touch only the tissue bodies (bit 1); the frame and the shafts touch nothing.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from backhug_hw_interface.sim.user import STANDARD_GRAVITY_M_S2, SimulatedUser

PAD_BIT = 1
TIP_BIT = 2
# Tissue pad under a finger: a 24 x 24 x 8 mm box (a contact patch a bit wider than the 20 mm
# tip, so the tip meets its flat underside wherever the torso pitches).
TISSUE_HALF_SIZE_M = (0.012, 0.012, 0.004)
# Tissue travel: 10 mm below its rest (only reached under a push with no finger below) to 40 mm of
# compression (the finger stroke).
TISSUE_RANGE_M = (-0.010, 0.040)
# Torso supports: spheres of 20 mm radius, 0.10 m each side of the midline (the broad back beside
# the finger columns, which sit 25-35 mm from it), every 20 mm along the back curve.
SUPPORT_RADIUS_M = 0.020
SUPPORT_LATERAL_M = 0.10
SUPPORT_SPACING_M = 0.020
# Contacts: tip-tissue and support-pad are stiff and critically damped (time constant twice the
# 1 ms step, impedance 0.99), so their compliance is a few percent of the tissue's at most.
CONTACT_SOLREF = (0.002, 1.0)
CONTACT_SOLIMP = (0.99, 0.99, 0.001, 0.5, 2.0)


@dataclasses.dataclass(frozen=True)
class ServoParameters:
    """The board's position servo per finger (device assumptions, not in the description)."""

    # Position gain 50 N/mm: a stiff geared servo (deflects ~1 mm at the 50 N of a typical press).
    kp_n_per_m: float = 50_000.0
    # Damping ratio of the servo loop on the finger's moving mass (critically damped).
    damping_ratio: float = 1.0
    # Reflected inertia of motor + lead screw along the joint, kg: assumption (a 2 mm lead screw
    # turns a ~1e-7 kg m^2 rotor into ~1 kg; we take half that for a small gearmotor).
    armature_kg: float = 0.5


@dataclasses.dataclass(frozen=True)
class ModelIndex:
    """Ids and addresses of the parts DeviceSimulation reads and writes, in joint order."""

    finger_qpos: np.ndarray
    finger_dof: np.ndarray
    finger_actuator: np.ndarray
    tip_sensor_adr: np.ndarray
    tissue_joint: np.ndarray
    tissue_qpos: np.ndarray
    tissue_body: np.ndarray
    tissue_geom: np.ndarray
    torso_body: int
    torso_qpos: np.ndarray
    tip_top_z0_m: np.ndarray


def _filter_device_collisions(spec: mujoco.MjSpec, pad_geom: str, tip_geoms: set[str]) -> None:
    """Keep only the pad (for the torso) and the tips (for the tissue) colliding."""
    for geom in spec.geoms:
        if geom.name == pad_geom:
            geom.contype, geom.conaffinity = PAD_BIT, 0
        elif geom.name in tip_geoms:
            geom.contype, geom.conaffinity = TIP_BIT, 0
        else:
            geom.contype, geom.conaffinity = 0, 0
            continue
        geom.condim = 1
        geom.solref = CONTACT_SOLREF
        geom.solimp = CONTACT_SOLIMP


def build_model(
    description,
    user: SimulatedUser,
    stiffness_n_per_mm: np.ndarray,
    timestep_s: float,
    servo: ServoParameters,
) -> tuple[mujoco.MjModel, ModelIndex]:
    """Compile the device + user model. ``stiffness_n_per_mm`` is per finger (joint order)."""
    joints = description.joints
    prefix = getattr(description, 'prefix', '')
    config = description.config
    pad_top_z = float(config.pad_top_z_m)

    spec = mujoco.MjSpec.from_string(description.urdf)
    spec.option.timestep = timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.gravity = (0.0, 0.0, -STANDARD_GRAVITY_M_S2)
    tip_geoms = {f'{j.name[: -len("_joint")]}_tip_collision' for j in joints}
    _filter_device_collisions(spec, f'{prefix}pad_collision', tip_geoms)

    # Finger servos and load cells.
    for joint in joints:
        spec_joint = spec.joint(joint.name)
        spec_joint.armature = servo.armature_kg
        actuator = spec.add_actuator()
        actuator.name = f'{joint.name}_servo'
        actuator.target = joint.name
        actuator.trntype = mujoco.mjtTrn.mjTRN_JOINT
        actuator.set_to_position(kp=servo.kp_n_per_m, dampratio=servo.damping_ratio)
        actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.ctrlrange = (joint.lower_m, joint.upper_m)
        actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.forcerange = (-joint.effort_limit_n, joint.effort_limit_n)
        tip_body = spec.body(f'{joint.name[: -len("_joint")]}_tip')
        site = tip_body.add_site()
        site.name = f'{joint.name}_load_site'
        site.type = mujoco.mjtGeom.mjGEOM_SPHERE
        # The tip body's origin is the top of the tip sphere; the site encloses the sphere.
        site.pos = (0.0, 0.0, -config.tip_radius_m)
        site.size = (config.tip_radius_m * 1.2, 0.0, 0.0)
        sensor = spec.add_sensor()
        sensor.name = f'{joint.name}_load'
        sensor.type = mujoco.mjtSensor.mjSENS_TOUCH
        sensor.objtype = mujoco.mjtObj.mjOBJ_SITE
        sensor.objname = site.name

    # The torso frame: on the spine line at row 1, on the pad top (the back curve is relative to
    # it). Its slide/hinge at 0 = the relaxed back lying on the pad.
    row1_x = min(j.tip_xyz_m[0] - j.spine_offset_m for j in joints)
    torso = spec.worldbody.add_body()
    torso.name = 'sim_user_torso'
    torso.pos = (row1_x, 0.0, pad_top_z)
    tissue_mass = user.tissue_mass_kg * len(joints)
    torso_mass = user.trunk_mass_kg - tissue_mass
    if torso_mass <= 0.1 * user.trunk_mass_kg:
        raise ValueError(
            f'{user.source}: tissue.local_mass_kg x {len(joints)} fingers ({tissue_mass:.2f} kg) '
            f'leaves too little of the trunk mass ({user.trunk_mass_kg:.2f} kg) for the torso'
        )
    # Inertia of a uniform box: trunk length x 0.35 m wide x 0.20 m deep (adult chest breadth
    # and depth, rounded; only the pitch and roll dynamics depend on it).
    length, width, depth = user.trunk_length_m, 0.35, 0.20
    com_z = depth / 2 + float(np.max(user.curve_heights_m))
    torso.mass = torso_mass
    torso.ipos = (user.trunk_com_offset_m, 0.0, com_z)
    torso.inertia = (
        torso_mass * (width**2 + depth**2) / 12,
        torso_mass * (length**2 + depth**2) / 12,
        torso_mass * (length**2 + width**2) / 12,
    )
    torso.explicitinertial = True
    slide = torso.add_joint()
    slide.name = 'sim_user_torso_z'
    slide.type = mujoco.mjtJoint.mjJNT_SLIDE
    slide.axis = (0.0, 0.0, 1.0)
    pitch = torso.add_joint()
    pitch.name = 'sim_user_torso_pitch'
    pitch.type = mujoco.mjtJoint.mjJNT_HINGE
    pitch.axis = (0.0, 1.0, 0.0)
    pitch.pos = (user.trunk_com_offset_m, 0.0, com_z)

    # Supports along the back curve, both sides.
    start = min(user.curve_offsets_m[0], -0.05)
    stop = max(user.curve_offsets_m[-1], user.trunk_length_m)
    for index, offset in enumerate(np.arange(start, stop + 1e-9, SUPPORT_SPACING_M)):
        height = float(user.back_height_m(offset))
        for side, y in (('l', SUPPORT_LATERAL_M), ('r', -SUPPORT_LATERAL_M)):
            geom = torso.add_geom()
            geom.name = f'sim_user_support_{side}_{index:02d}'
            geom.type = mujoco.mjtGeom.mjGEOM_SPHERE
            geom.size = (SUPPORT_RADIUS_M, 0.0, 0.0)
            geom.pos = (float(offset), y, height + SUPPORT_RADIUS_M)
            geom.mass = 0.0
            geom.contype, geom.conaffinity, geom.condim = 0, PAD_BIT, 1
            geom.solref, geom.solimp = CONTACT_SOLREF, CONTACT_SOLIMP
            geom.rgba = (0.9, 0.75, 0.65, 0.3)

    # Tissue under each finger.
    stiffness = np.asarray(stiffness_n_per_mm, dtype=float)
    damping = user.damping_n_s_per_mm * 1000.0
    half = TISSUE_HALF_SIZE_M
    for joint, k_n_per_mm in zip(joints, stiffness, strict=True):
        offset = joint.spine_offset_m
        body = torso.add_body()
        body.name = f'sim_user_tissue_{joint.name[: -len("_joint")]}'
        body.pos = (
            joint.tip_xyz_m[0] - row1_x,
            joint.tip_xyz_m[1],
            float(user.back_height_m(offset)) + half[2],
        )
        body.mass = user.tissue_mass_kg
        body.inertia = (1e-5, 1e-5, 1e-5)
        body.explicitinertial = True
        tissue = body.add_joint()
        tissue.name = f'{body.name}_z'
        tissue.type = mujoco.mjtJoint.mjJNT_SLIDE
        tissue.axis = (0.0, 0.0, 1.0)
        # MuJoCo 4 joint stiffness/damping are polynomials [linear, quadratic, cubic]: linear only.
        tissue.stiffness = (k_n_per_mm * 1000.0, 0.0, 0.0)
        # Preloaded by the tissue's own weight, so q = 0 is its rest under gravity.
        tissue.springref = tissue_springref_m(user.tissue_mass_kg, k_n_per_mm)
        tissue.damping = (damping, 0.0, 0.0)
        tissue.limited = mujoco.mjtLimited.mjLIMITED_TRUE
        tissue.range = TISSUE_RANGE_M
        geom = body.add_geom()
        geom.name = f'{body.name}_skin'
        geom.type = mujoco.mjtGeom.mjGEOM_BOX
        geom.size = half
        geom.mass = 0.0
        geom.contype, geom.conaffinity, geom.condim = 0, TIP_BIT, 1
        geom.solref, geom.solimp = CONTACT_SOLREF, CONTACT_SOLIMP
        geom.rgba = (0.95, 0.7, 0.6, 0.6)

    model = spec.compile()
    index = ModelIndex(
        finger_qpos=np.array([model.jnt_qposadr[model.joint(j.name).id] for j in joints]),
        finger_dof=np.array([model.jnt_dofadr[model.joint(j.name).id] for j in joints]),
        finger_actuator=np.array([model.actuator(f'{j.name}_servo').id for j in joints]),
        tip_sensor_adr=np.array(
            [model.sensor_adr[model.sensor(f'{j.name}_load').id] for j in joints]
        ),
        tissue_joint=np.array(
            [model.joint(f'sim_user_tissue_{j.name[: -len("_joint")]}_z').id for j in joints]
        ),
        tissue_qpos=np.array(
            [
                model.jnt_qposadr[model.joint(f'sim_user_tissue_{j.name[: -len("_joint")]}_z').id]
                for j in joints
            ]
        ),
        tissue_body=np.array(
            [model.body(f'sim_user_tissue_{j.name[: -len("_joint")]}').id for j in joints]
        ),
        tissue_geom=np.array(
            [model.geom(f'sim_user_tissue_{j.name[: -len("_joint")]}_skin').id for j in joints]
        ),
        torso_body=model.body('sim_user_torso').id,
        torso_qpos=np.array(
            [
                model.jnt_qposadr[model.joint('sim_user_torso_z').id],
                model.jnt_qposadr[model.joint('sim_user_torso_pitch').id],
            ]
        ),
        tip_top_z0_m=np.array([j.tip_xyz_m[2] for j in joints]),
    )
    return model, index


def tissue_springref_m(mass_kg: float, stiffness_n_per_mm: float) -> float:
    """Spring reference that holds a tissue body of ``mass_kg`` at q = 0 under gravity."""
    return mass_kg * STANDARD_GRAVITY_M_S2 / (stiffness_n_per_mm * 1000.0)
