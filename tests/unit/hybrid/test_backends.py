"""The solver registry: a backend registered in one module (this one) is what the portfolio, the wire
format and the CLI know, and nothing else has to change."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import dimod
import numpy as np
import pydantic
import pytest

from qxedge.agent.cli import build_parser
from qxedge.hybrid.backends import Backend, Deadline, backend_names, register, solver_names, unregister
from qxedge.hybrid.portfolio import Portfolio, SolversConfig
from qxedge.hybrid.solvers import finish
from qxedge.hybrid.wire import Candidate, JobLimits, JobRejected, decode_job
from qxedge.testing import random_bqm, sample_energy


def solve_all_ones(bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
    """The toy backend: every variable 1 (in BINARY terms)."""
    return finish(bqm, "ones", np.ones(bqm.num_variables), time.monotonic(), details={"toy": True})


def over_four(n: int) -> str | None:
    return f"{n} variables > 4" if n > 4 else None


@pytest.fixture
def ones() -> Iterator[str]:
    register("ones", lambda _config: Backend("ones", solve_all_ones, over_four))
    yield "ones"
    unregister("ones")


def job(solver: str) -> bytes:
    bqm = dimod.BinaryQuadraticModel({"a": 1.0}, {}, 0.0, dimod.BINARY)
    doc = {
        "v": 1,
        "job_id": "j1",
        "site": "s",
        "kind": "bqm",
        "problem": bqm.to_serializable(use_bytes=False),
        "deadline_ms": 1000,
        "submitted_at": time.time(),
        "solver": solver,
        "reply_to": "qx/v1/s/results/j1",
    }
    return json.dumps(doc).encode()


def test_the_built_in_backends_are_registered() -> None:
    assert backend_names() == ("exact", "sa", "tabu", "greedy", "qaoa", "milp")
    assert solver_names() == ("auto", *backend_names())


async def test_a_registered_backend_is_what_the_portfolio_runs(ones: str) -> None:
    bqm = random_bqm(4, 0.5, seed=3)
    portfolio = Portfolio(SolversConfig(workers=0, auto=[ones]))
    try:
        _, candidates = await portfolio.solve(bqm, "auto", time.time() + 2)
        assert [c.solver for c in candidates] == ["greedy", "ones"]  # the floor answer, then the backend
        toy = candidates[1]
        assert toy.details == {"toy": True, "ran_in": "thread"}
        assert toy.sample is not None and set(toy.sample.values()) == {1}
        assert toy.energy == pytest.approx(sample_energy(bqm, toy.sample))
        big, refused = await portfolio.solve(random_bqm(5, 0.5, seed=3), ones, time.time() + 2)
        assert [(c.solver, c.status, c.reason) for c in refused] == [
            ("ones", "refused", "5 variables > 4"),
            ("greedy", "ok", None),
        ]
        assert big is not None and big.solver == "greedy"  # refused: the floor answers
    finally:
        portfolio.close()


def test_jobs_and_the_cli_may_name_a_registered_backend(ones: str) -> None:
    assert decode_job(job(ones), JobLimits()).envelope.solver == ones
    args = build_parser().parse_args(["solve", "p.json", "--solver", ones])
    assert args.solver == ones


def test_an_unregistered_backend_is_unknown_everywhere() -> None:
    assert "ones" not in backend_names()
    with pytest.raises(JobRejected, match=r"unknown solver 'ones' \(one of auto, exact, sa, tabu"):
        decode_job(job("ones"), JobLimits())
    with pytest.raises(pydantic.ValidationError, match="unknown solver 'ones'"):
        SolversConfig(auto=["ones"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["solve", "p.json", "--solver", "ones"])


@pytest.mark.parametrize("name", ["auto", "exact", "", "two words"])
def test_a_backend_name_is_new_and_plain(name: str) -> None:
    with pytest.raises(ValueError, match="solver backend"):
        register(name, lambda _config: Backend(name, solve_all_ones))
