"""The mujoco backend through the Backend contract: open, write, step, read, errors."""

from __future__ import annotations

import numpy as np
import pytest
from backhug_hw_interface.backends.base import Backend, BackendError, HardwareState
from backhug_hw_interface.backends.mujoco_backend import MujocoBackend

from backhug_description import load_description


@pytest.fixture(scope='module')
def description():
    return load_description('sim')


def test_backend_drives_the_simulated_device_in_its_own_joint_order(description) -> None:
    names = list(reversed(description.joint_names))  # any order hw_interface chooses
    backend = MujocoBackend(names, description=description, user='default', seed=0)
    assert isinstance(backend, Backend)
    backend.open()
    assert backend.sim_time_s == 0.0
    targets = np.zeros(len(names))
    pressing = names.index('finger_l_05_joint')
    targets[pressing] = 0.012  # ~7 mm into the back at row 5
    for _ in range(300):
        backend.write(targets, np.ones(len(names), dtype=bool))
        backend.step(0.004)
    state = backend.read()
    assert isinstance(state, HardwareState)
    assert backend.sim_time_s == pytest.approx(1.2)
    assert state.stamp_s == backend.sim_time_s
    assert state.link_ok and not state.estop and state.board_faults == 0
    assert state.finger_faults.shape == (len(names),)
    simulation = backend.simulation
    order = [simulation.joint_names.index(name) for name in names]
    np.testing.assert_array_equal(state.position_m, simulation.position_m[order])
    np.testing.assert_array_equal(state.effort_n, simulation.load_n[order])
    # Only the pressing finger is loaded (positive effort = pushing on the user).
    assert state.effort_n[pressing] > 40.0
    assert np.all(np.abs(np.delete(state.effort_n, pressing)) < 0.5)
    assert state.position_m[pressing] == pytest.approx(0.012, abs=0.002)
    backend.close()


def test_backend_rejects_bad_input_with_clear_errors(description) -> None:
    backend = MujocoBackend(description.joint_names, description=description)
    with pytest.raises(BackendError, match='not open'):
        backend.read()
    backend.open()
    count = len(description.joint_names)
    bad = np.zeros(count)
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r'position_m\[2\] \(finger_l_03_joint\)'):
        backend.write(bad, np.ones(count, dtype=bool))
    with pytest.raises(ValueError, match='enable must have'):
        backend.write(np.zeros(count), np.ones(3, dtype=bool))
    with pytest.raises(BackendError, match='not finger joints'):
        MujocoBackend(['finger_x_99_joint'], description=description).open()
    with pytest.raises(BackendError, match='unknown simulated user'):
        MujocoBackend(description.joint_names, description=description, user='nobody').open()
