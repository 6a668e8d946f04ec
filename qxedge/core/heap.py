"""What a long-lived process allocated at start, kept out of the garbage collector's full passes.

A process's imports and start-up state (modules, configs, model sessions, solver backends: ~236,000
objects in a solver process with every backend warm) live as long as it does, yet every full collection
walks all of them: ~108 ms a pass in a warm solver process (measured while a CI run shared the box),
often enough to take an SA answer past its job's collection deadline, so that only the floor answered
(sparse n = 5000 at 2 s, ``bench/solvers.py``). :func:`freeze_start_up` collects once, then moves every
surviving object to the permanent generation (:func:`gc.freeze`): later full passes walk only what
the process allocated since.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Call once a process has started (imports done, backends warm), before its first timed work."""
    gc.collect()
    gc.freeze()
