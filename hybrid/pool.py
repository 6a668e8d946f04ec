"""Solver processes that a deadline can stop: warm before any job, one task at a time, recycled on overrun.

Each :class:`SolverProcess` is forked from a forkserver that preloaded dimod and the dwave-samplers,
imports (or compiles) what every backend needs once (:meth:`SolverPool.start`), then solves one task at a
time, sent over a pipe. Its :class:`~qxedge.hybrid.backends.Deadline` reads a ``cut`` time shared with the
worker (a ``RawValue``), so the worker can bring a running task's deadline forward: the solver then
returns its best-so-far at its next step. A process whose task is not back within ``grace`` of being
told to stop is terminated and a new one started in the background; it takes tasks once it is warm. So a
job's work ends at its deadline and never delays the next job: a job takes only the processes that are
idle when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import time
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import TYPE_CHECKING, Any

from qxedge.core.heap import freeze_start_up, keep_freed_memory
from qxedge.hybrid.backends import Deadline, SolverFactory, backend_names, build, plugins, register

if TYPE_CHECKING:
    import dimod

    from qxedge.hybrid.constrained import ConstrainedJob
    from qxedge.hybrid.portfolio import SolversConfig
    from qxedge.hybrid.shared_matrix import SharedQubo
    from qxedge.hybrid.wire import Candidate

log = logging.getLogger(__name__)
NEVER = math.inf
BIG_TASK_BYTES = 1 << 20  # sent from a thread: a pipe write this large would hold up the event loop


def _serve(
    conn: Connection, cut: Any, cfg: SolversConfig, plugins: dict[str, SolverFactory], warm: tuple[str, ...]
) -> None:  # pragma: no cover - a child process
    """A solver process: keep freed memory for the next task, register the plug-in backends, warm the
    backends named in ``warm``, say so, then answer tasks until the pipe closes."""
    from qxedge.hybrid.portfolio import run_solver, warm_backends

    keep_freed_memory(cfg.keep_freed_bytes)  # before warming: tabu's calibration grows the heap it keeps
    for name, factory in plugins.items():
        if name not in backend_names():
            register(name, factory)
    warm_backends(cfg, warm)
    freeze_start_up()  # a full collection would walk every backend's modules in a job's deadline
    conn.send(os.getpid())
    while True:
        try:
            name, due = conn.recv()
            bqm = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        conn.send(run_solver(name, cfg, bqm, Deadline(due, cut)))


async def _readable(conn: Connection, wait_s: float) -> bool:
    """Wait until ``conn`` has something to read (True) or ``wait_s`` seconds pass (False)."""
    if conn.poll():
        return True
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = conn.fileno()  # kept: the pool may close the pipe (and its fileno()) while this waits
    loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(None if wait_s == NEVER else max(0.0, wait_s)):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


class SolverProcess:
    """One solver process and its end of the pipe; ``cut`` is the shared time its task must stop by."""

    def __init__(
        self,
        ctx: ForkServerContext,
        cfg: SolversConfig,
        plugins: dict[str, SolverFactory],
        warm: tuple[str, ...],
    ) -> None:
        self.conn, child = ctx.Pipe()
        self.cut = ctx.RawValue("d", NEVER)
        self.process = ctx.Process(
            target=_serve,
            args=(child, self.cut, cfg, plugins, warm),
            daemon=True,
            name="qxedge-solver",
        )
        self.process.start()
        child.close()
        self.pid = self.process.pid

    def wait_warm(self, timeout: float) -> None:
        """Block until the process has warmed up (RuntimeError when it died or took too long)."""
        if not self.conn.poll(timeout):
            raise RuntimeError(f"solver process {self.pid} did not warm up within {timeout:.0f} s")
        self.conn.recv()

    async def warm(self, wait_s: float) -> bool:
        try:
            if await _readable(self.conn, wait_s):
                self.conn.recv()
                return True
        except (EOFError, OSError):
            pass
        return False

    def send(self, name: str, due: float, bqm_bytes: bytes) -> None:
        self.cut.value = NEVER
        self.conn.send((name, due))
        self.conn.send_bytes(bqm_bytes)

    def terminate(self) -> None:
        self.process.terminate()
        self.conn.close()

    def reap(self) -> None:
        """Wait for a terminated process (from a thread), killing it when SIGTERM is not enough."""
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class SolverPool:
    """``size`` warm solver processes; :meth:`take` hands out idle ones, :meth:`submit` solves on one."""

    def __init__(self, cfg: SolversConfig, *, grace_s: float = 0.05, warm_timeout_s: float = 120.0) -> None:
        self.cfg = cfg
        self.size = cfg.workers
        self.grace_s = grace_s
        self.warm_timeout_s = warm_timeout_s
        self.recycled = 0  # processes terminated because their task overran
        self._ctx = multiprocessing.get_context("forkserver")
        self._idle: list[SolverProcess] = []
        self._all: set[SolverProcess] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._warm: tuple[str, ...] = ()
        self._plugins: dict[str, SolverFactory] = {}
        self.started = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    def start(self, warm: tuple[str, ...]) -> float:
        """Start every process and warm the backends named in ``warm`` in each (blocking: call it before
        any clock starts); seconds it took."""
        began = time.monotonic()
        if not self.started:
            self.started = True
            self._warm = warm
            self._plugins = _picklable(plugins())
            preload = [m for name in warm for m in getattr(build(name, self.cfg), "preload", ())]
            # the forkserver imports these once (it starts with the first process of this interpreter)
            self._ctx.set_forkserver_preload(["dimod", "dwave.samplers", "qxedge.hybrid.portfolio", *preload])
            fresh = [self._spawn() for _ in range(self.size)]
            for process in fresh:
                process.wait_warm(self.warm_timeout_s)
            self._idle += fresh
        return time.monotonic() - began

    def _spawn(self) -> SolverProcess:
        process = SolverProcess(self._ctx, self.cfg, self._plugins, self._warm)
        self._all.add(process)
        return process

    def take(self, count: int) -> list[SolverProcess]:
        """Up to ``count`` idle processes, now (none wait for a busy one)."""
        taken, self._idle = self._idle[:count], self._idle[count:]
        return taken

    def submit(
        self, process: SolverProcess, name: str, due: float, bqm_bytes: bytes
    ) -> asyncio.Task[Candidate]:
        """Solve on ``process`` (from :meth:`take`) until ``due``; the process is idle again once its task
        is back, recycled when the task fails or is cancelled (:meth:`stop`). A task of up to
        BIG_TASK_BYTES is sent before this returns: left to the task's first step, it waited for
        whatever the caller ran next, e.g. a thread that held the GIL (dimod building a complete
        n = 2000 model: tabu's process started 0.12 s late)."""
        failed: OSError | None = None
        if len(bqm_bytes) <= BIG_TASK_BYTES:
            try:
                process.send(name, due, bqm_bytes)
            except OSError as exc:  # a dead process: the task fails with it, and the process is recycled
                failed = exc

        async def solve() -> Candidate:
            if failed is not None:
                raise failed
            if len(bqm_bytes) > BIG_TASK_BYTES:
                await asyncio.to_thread(process.send, name, due, bqm_bytes)
            await _readable(process.conn, NEVER)
            candidate: Candidate = process.conn.recv()
            return candidate

        def settled(task: asyncio.Task[Candidate]) -> None:
            if not self.started:  # the pool closed: its processes are gone already
                return
            if task.cancelled():
                self._recycle(
                    process, f"{name} still running {self.grace_s * 1000:.0f} ms after it was stopped"
                )
            elif task.exception() is not None:
                self._recycle(process, f"{name} failed: {task.exception()!r}")
            else:
                self._idle.append(process)

        task = asyncio.create_task(solve(), name=f"solver-{name}-{process.pid}")
        task.add_done_callback(settled)
        return task

    def stop(self, process: SolverProcess, task: asyncio.Task[Candidate]) -> None:
        """Tell a running task to stop now (its solver returns at its next step); unless it is back within
        the grace, its process is recycled."""
        process.cut.value = time.time()

        async def watchdog() -> None:
            await asyncio.wait({task}, timeout=self.grace_s)
            task.cancel()  # no-op when it is back

        self._in_background(watchdog())

    def _recycle(self, process: SolverProcess, why: str) -> None:
        self.recycled += 1
        log.warning("recycling solver process %s: %s", process.pid, why)
        self._all.discard(process)
        process.terminate()
        self._in_background(asyncio.to_thread(process.reap))
        if self.started:
            self._in_background(self._replace())

    async def _replace(self) -> None:
        fresh = await asyncio.to_thread(self._spawn)
        if await fresh.warm(self.warm_timeout_s) and self.started:
            self._idle.append(fresh)
            return
        if self.started:  # else the pool closed meanwhile: nothing to say
            log.error("a new solver process %s did not warm up; running with fewer", fresh.pid)
        self._all.discard(fresh)
        fresh.terminate()
        await asyncio.to_thread(fresh.reap)

    def _in_background(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def close(self) -> None:
        """Stop every process now (a task still running is abandoned: its job has been answered)."""
        self.started = False
        for task in self._background:
            if not task.get_loop().is_closed():
                task.cancel()
        for process in self._all:
            with contextlib.suppress(OSError):
                process.terminate()
        for process in self._all:
            process.reap()
        self._all.clear()
        self._idle.clear()


def _picklable(factories: dict[str, SolverFactory]) -> dict[str, SolverFactory]:
    kept = {}
    for name, factory in factories.items():
        try:
            pickle.dumps(factory)
        except (pickle.PicklingError, AttributeError, TypeError):
            log.warning("solver backend %r cannot run in solver processes: its factory does not pickle", name)
        else:
            kept[name] = factory
    return kept


def ship_seconds(variables: int, interactions: int) -> float:
    """A model's way to a solver process predicted from its size: pickled, sent, rebuilt there (dimod
    rebuilds its adjacency: 0.14 s of the 0.2 s measured on a complete n = 2000 model)."""
    return 0.002 + 1e-6 * variables + 100e-9 * interactions


def pickled(bqm: dimod.BinaryQuadraticModel | ConstrainedJob | SharedQubo) -> bytes:
    """The model (a BQM, a ``cqm`` job's bundle, or a dense model's shared matrix: its name and labels)
    as every process of one job receives it (pickled once per job)."""
    return pickle.dumps(bqm, protocol=pickle.HIGHEST_PROTOCOL)
