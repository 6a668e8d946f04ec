"""Cancels that library code swallowed, and how a loop that must stop on cancel still stops.

Two ways a cancel meant for a connector's task gets lost before it reaches the connector's own code:

- Python 3.11's ``asyncio.wait_for`` returns the result and drops a cancel that lands in the loop
  iteration in which the awaited call completes (python/cpython#86296, fixed by the 3.12 rewrite on
  ``asyncio.timeout``). pymodbus calls it inside every request and connect. qxedge's own code uses
  ``asyncio.timeout`` instead (ruff bans ``asyncio.wait_for``: TID251 in pyproject.toml).
- asyncua's teardown (``Client._cancel_task``) catches ``CancelledError`` outright.

Either way the task's cancel request still counts (``Task.cancelling()``): the Modbus and OPC UA poll and
reconnect loops call :func:`raise_if_cancelling` before they wait again, or they would poll and reconnect
for ever after their TaskGroup cancelled them (a CI run once hung so), and so does the setpoint gate
after each write to the plant (a connector's write runs in the caller's task: the evaluation loop, the
production day).
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` when the current task was asked to stop and the cancel got lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
