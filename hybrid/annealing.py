"""Simulated annealing that fills its budget (the ``sa`` backend, registered in :mod:`hybrid.solvers`).

dwave-samplers' SimulatedAnnealingSampler has no time limit of its own (dwave-samplers issue #27): it
runs in rounds of reads, its ``interrupt_function`` stopping before a read that would end after the
deadline. Short budgets get short anneals, long ones longer anneals (:func:`plan_sweeps`), planned
from the time per sweep measured on the job's own model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dimod
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.candidate import finish, hand_back_seconds, model_arrays, timed_out
from qxedge.hybrid.wire import Candidate


class SaConfig(BaseModel):
    """Simulated annealing that fills its budget: reads (restarts) of ``num_sweeps`` sweeps; a short
    budget gets shorter anneals, a long one longer anneals, each read as long as the sweeps measured
    on the job's own model allow (see :func:`plan_sweeps`)."""

    model_config = ConfigDict(extra="forbid")
    num_sweeps: int = Field(
        1000, ge=1, description="sweeps per read while the budget holds min_reads to target_reads of them"
    )
    min_sweeps: int = Field(10, ge=1, description="the shortest anneal, for budgets below min_reads reads")
    min_reads: int = Field(2, ge=1, description="fewer reads of num_sweeps fit: anneals get shorter")
    target_reads: int = Field(10, ge=1, description="more reads of num_sweeps fit: anneals get longer")
    max_read_seconds: float = Field(
        0.5, gt=0, description="the longest read: a cut or the deadline ends SA within one read"
    )
    max_reads: int | None = Field(
        None,
        ge=1,
        description="a fixed number of reads of at most num_sweeps (the same answer for a seed when the "
        "budget holds them); None: as many as the budget holds",
    )
    max_sample_mb: float = Field(
        32, gt=0, description="samples held at once (reads x variables bytes): a bound on memory"
    )
    seed: int | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SaConfig:
        if self.min_sweeps > self.num_sweeps:
            raise ValueError(f"min_sweeps {self.min_sweeps} > num_sweeps {self.num_sweeps}")
        if self.min_reads > self.target_reads:
            raise ValueError(f"min_reads {self.min_reads} > target_reads {self.target_reads}")
        return self


# dwave-samplers' sampler spends almost all of its set-up in its default beta range, a Python loop over
# the interactions (2.4 s of 2.6 s on a complete n = 2000 model): default_beta_range computes the same
# range with NumPy (tests/unit/hybrid/test_anytime.py checks it against dwave's). What is left is the
# SPIN copy and the sampler's own set-up (its adjacency lists), sa_setup_seconds, and the sweeps,
# sa_sweep_seconds (bench/anytime.py measured both). The first round is planned on these cautious
# guesses; the later ones on what the job measured.
SAFETY = 1.5  # a read or a set-up may take this many times what was measured (a busy machine)


def sa_setup_seconds(variables: int, interactions: int) -> float:
    """The set-up predicted before a model is touched: 0.6 s on a complete n = 2000 model (0.47..0.69 s
    measured), 30 ms on n = 5000 sparse (15..26 ms)."""
    return 0.003 + 4e-6 * variables + 150e-9 * 2 * interactions


def sa_sweep_seconds(variables: int, interactions: int) -> float:
    """A sweep's time predicted before a job measures its own: 12 ns a variable (a random number and
    an exponential each) and 1 ns each end of a coupling, cautious on what was measured on a quiet
    machine (3.6 ms on a complete n = 2000 model, 55 us on n = 5000 sparse of degree 15, 5.3 us on
    n = 500). The first round's anneals are planned on it: too cautious a guess makes them short."""
    return 12e-9 * variables + 1e-9 * 2 * interactions


def sa_startup_seconds(variables: int, interactions: int, cfg: SaConfig) -> float:
    """The least time before SA has an answer: its set-up, the shortest anneal and the hand-back."""
    return (
        hand_back_seconds(variables, interactions)
        + sa_setup_seconds(variables, interactions)
        + cfg.min_sweeps * sa_sweep_seconds(variables, interactions)
    )


def default_beta_range(h: np.ndarray, row: np.ndarray, col: np.ndarray, j: np.ndarray) -> list[float]:
    """dwave-samplers' default beta range (``_default_ising_beta_range``) from the Ising arrays: hot
    enough that every spin flips with probability 1/2, cold enough that the easiest excitation has
    probability 0.01 in the last sweep."""
    n = len(h)
    abs_h, abs_j = np.abs(h), np.abs(j)
    field = abs_h + np.bincount(row, abs_j, n) + np.bincount(col, abs_j, n)  # the largest effective field
    smallest = np.where(abs_h != 0, abs_h, np.inf)  # the smallest nonzero bias of each spin
    nonzero = abs_j != 0
    np.minimum.at(smallest, row[nonzero], abs_j[nonzero])
    np.minimum.at(smallest, col[nonzero], abs_j[nonzero])
    smallest = smallest[np.isfinite(smallest)]
    if len(smallest) == 0:  # every bias zero; dwave's range (it also warns)
        return [0.1, 1.0]
    largest = float(field.max())
    hot = 1.0 if largest == 0 else float(np.log(2) / (2 * largest))
    gap = float(smallest.min())
    cold = float(np.log(np.count_nonzero(smallest == gap) / 0.01) / (2 * gap))
    return [hot, cold]


def plan_sweeps(total_sweeps: float, cfg: SaConfig, longest: float) -> int:
    """Sweeps per read when ``total_sweeps`` fit in the budget: ``num_sweeps`` while that makes
    ``min_reads`` to ``target_reads`` reads; shorter anneals (down to ``min_sweeps``) for fewer, longer
    ones (up to ``longest``, a read of ``max_read_seconds``) for more, as many reads as fit in any case.
    With ``max_reads`` set, anneals never get longer than ``num_sweeps``."""
    if total_sweeps >= cfg.target_reads * cfg.num_sweeps and cfg.max_reads is None:
        sweeps = total_sweeps / cfg.target_reads
    elif total_sweeps >= cfg.min_reads * cfg.num_sweeps:
        sweeps = cfg.num_sweeps
    else:
        sweeps = total_sweeps / cfg.min_reads
    return int(max(cfg.min_sweeps, min(sweeps, longest)))


@dataclass(slots=True)
class ReadTimer:
    """One sampler call's ``interrupt_function`` (called after each read): notes when each read ended
    and stops before a read that, as long as the last one, would end after the deadline."""

    deadline: Deadline
    hand_back: float
    began: float = field(default_factory=time.time)
    ends: list[float] = field(default_factory=list)

    def __call__(self) -> bool:
        now = time.time()
        # the first read's time also holds the call's set-up: a cautious guess at the next one
        last = now - (self.ends[-1] if self.ends else self.began)
        self.ends.append(now)
        return now + SAFETY * last + self.hand_back > self.deadline.at()


def solve_sa(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: SaConfig) -> Candidate:
    """Reads until the next one would not end before the deadline, in rounds of at most
    ``max_sample_mb`` of samples; each round's sweeps come from the time per sweep measured so far."""
    from dwave.samplers import SimulatedAnnealingSampler

    started = time.monotonic()
    n, m = bqm.num_variables, bqm.num_interactions
    if n == 0:
        return finish(bqm, "sa", np.zeros(0), started)
    hand_back = hand_back_seconds(n, m)
    per_sweep = sa_sweep_seconds(n, m)
    setup = sa_setup_seconds(n, m)
    if deadline.left() < sa_startup_seconds(n, m, cfg):
        return timed_out(
            "sa",
            started,
            f"set-up predicted at {setup:.3f} s for {n} variables and {m} interactions, "
            f"more than the {max(0.0, deadline.left()):.3f} s left",
        )
    spin = bqm if bqm.vartype is dimod.SPIN else bqm.change_vartype(dimod.SPIN, inplace=False)
    h, row, col, j, _ = model_arrays(spin)
    beta_range = default_beta_range(h, row, col, j)
    rng = np.random.default_rng(cfg.seed)
    reads_held = max(1, int(cfg.max_sample_mb * 1e6 / n))
    best_values: np.ndarray | None = None
    best_energy = np.inf
    reads_done, rounds, sweeps_done, sweeps_used = 0, 0, 0, []
    stopped = "budget"
    while True:
        left = deadline.left() - hand_back
        total = (left - SAFETY * setup) / per_sweep
        sweeps = plan_sweeps(total, cfg, cfg.max_read_seconds / per_sweep)
        wanted = cfg.max_reads - reads_done if cfg.max_reads is not None else reads_held
        if wanted <= 0:
            stopped = "max_reads"
            break
        if total < sweeps or (rounds and total * per_sweep < setup):
            break  # not one more read fits, or a further round would be mostly set-up
        # more reads than predicted to fit (the first guess at per_sweep was up to 3x the time measured,
        # and a round ended early costs another set-up; the interrupt stops it in time): the samples
        # array is allocated for all of them
        reads = max(1, min(wanted, reads_held, int(4 * total / sweeps) + 1))
        timer = ReadTimer(deadline, hand_back)
        result = SimulatedAnnealingSampler().sample(
            spin,
            num_reads=reads,
            num_sweeps=sweeps,
            beta_range=beta_range,
            # a seeded first round is the sampler's own run with that seed (with max_reads: the answer)
            seed=cfg.seed if cfg.seed is not None and rounds == 0 else int(rng.integers(2**31)),
            interrupt_function=timer,
        )
        rounds += 1
        sweeps_used.append(sweeps)
        done = len(result)
        reads_done += done
        sweeps_done += done * sweeps
        if len(timer.ends) >= 2:  # what this model measured: per sweep, and the call's own set-up
            per_read = float(np.median(np.diff(timer.ends)))
            per_sweep = max(per_read / sweeps, 1e-12)
            setup = max(0.0, timer.ends[0] - timer.began - per_read)
        elif timer.ends:  # one read: the set-up was at most the whole call
            setup = min(setup, timer.ends[0] - timer.began)
        record = result.record
        k = int(np.argmin(record.energy))
        if record.energy[k] < best_energy:
            best_energy = float(record.energy[k])
            position = {v: i for i, v in enumerate(result.variables)}  # not .index: O(n^2) at n = 5000
            order = [position[v] for v in bqm.variables]
            best_values = (record.sample[k, order] + 1) // 2
        if done < reads and len(timer.ends) >= 2:
            break  # the interrupt: the next read, as long as the last, would have ended too late
        # else all reads done, or stopped after the first, whose time held the set-up: plan again
    if best_values is None:
        return timed_out("sa", started, "no read fitted in the time left after the set-up")
    details = {
        "reads": reads_done,
        "rounds": rounds,
        "sweeps": sweeps_used,
        "sweeps_done": sweeps_done,
        "sweep_us": round(per_sweep * 1e6, 3),
        "stopped": stopped,
    }
    return finish(bqm, "sa", best_values, started, details=details)
