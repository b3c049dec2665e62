"""Bring a lifecycle node to ``active`` over its services, where no launch system does it.

The launch file configures and activates hw_interface with launch_ros events; ``backhug run``
(and tests) use this instead, with the same services (``/<name>/get_state``,
``/<name>/change_state``)::

    activate(node, 'hw_interface', timeout_s=30.0)   # node must be spinning (another thread)

Each step waits for the answer without spinning ``node`` itself, so it works from any thread
while an executor spins the node elsewhere; a missing service, a refused transition or a silent
node raises :class:`LifecycleError` naming the node, the step and the state it is in.
"""

from __future__ import annotations

import time
from typing import Any

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState

_STATE_NAMES = {
    State.PRIMARY_STATE_UNKNOWN: 'unknown',
    State.PRIMARY_STATE_UNCONFIGURED: 'unconfigured',
    State.PRIMARY_STATE_INACTIVE: 'inactive',
    State.PRIMARY_STATE_ACTIVE: 'active',
    State.PRIMARY_STATE_FINALIZED: 'finalized',
}


class LifecycleError(RuntimeError):
    """A lifecycle node could not be brought to active."""


def _wait(future: Any, deadline: float) -> bool:
    while not future.done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def activate(node: Any, name: str, timeout_s: float = 30.0) -> None:
    """Configure (if unconfigured) and activate the lifecycle node ``name``; no-op if active."""
    get_state = node.create_client(GetState, f'/{name}/get_state')
    change_state = node.create_client(ChangeState, f'/{name}/change_state')
    deadline = time.monotonic() + timeout_s
    try:
        for client in (get_state, change_state):
            if not client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
                raise LifecycleError(
                    f'{name}: no {client.srv_name} service after {timeout_s:g} s (did the node '
                    'start? is it a lifecycle node?)'
                )

        def current() -> int:
            future = get_state.call_async(GetState.Request())
            if not _wait(future, deadline):
                raise LifecycleError(f'{name}: no answer from {get_state.srv_name}')
            return future.result().current_state.id

        steps = {
            State.PRIMARY_STATE_UNCONFIGURED: (Transition.TRANSITION_CONFIGURE, 'configure'),
            State.PRIMARY_STATE_INACTIVE: (Transition.TRANSITION_ACTIVATE, 'activate'),
        }
        state = current()
        while state != State.PRIMARY_STATE_ACTIVE:
            if state not in steps:
                raise LifecycleError(
                    f'{name}: is {_STATE_NAMES.get(state, state)}, cannot be activated'
                )
            transition, label = steps[state]
            future = change_state.call_async(
                ChangeState.Request(transition=Transition(id=transition))
            )
            if not _wait(future, deadline):
                raise LifecycleError(
                    f'{name}: {label} not answered within {timeout_s:g} s (state '
                    f'{_STATE_NAMES.get(state, state)}; is its executor blocked?)'
                )
            if not future.result().success:
                after = current()
                raise LifecycleError(
                    f'{name}: {label} failed, now {_STATE_NAMES.get(after, after)} (see its log)'
                )
            state = current()
    finally:
        node.destroy_client(get_state)
        node.destroy_client(change_state)
