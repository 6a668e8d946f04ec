"""A job's BQM as checked arrays (:mod:`hybrid.decoded_bqm`): dimod's model built when first asked, a
dense model's tabu matrix written straight from the arrays."""

from __future__ import annotations

import time
from typing import Any

import dimod
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qxedge.hybrid.candidate import to_binary
from qxedge.hybrid.decoded_bqm import DecodedBqm
from qxedge.hybrid.portfolio import Portfolio, SolversConfig
from qxedge.hybrid.shared_matrix import SharedQubo
from qxedge.hybrid.tabu import tabu_matrix
from qxedge.hybrid.wire import JobLimits, check_bqm
from qxedge.testing import random_bqm, sample_energy


def decoded(n: int, pairs: list[tuple[int, int, float]], vartype: str = "BINARY") -> DecodedBqm:
    """The serialised form of ``pairs`` (listed as given: twice, both ways, or a variable with itself)."""
    head, tail, biases = zip(*pairs, strict=True) if pairs else ((), (), ())
    problem = {
        "type": "BinaryQuadraticModel",
        "version": {"bqm_schema": "3.0.0"},
        "use_bytes": False,
        "num_variables": n,
        "num_interactions": len(pairs),
        "variable_labels": [f"x{i}" for i in range(n)],
        "variable_type": vartype,
        "offset": 1.5,
        "linear_biases": [float(i) - 2 for i in range(n)],
        "quadratic_head": list(head),
        "quadratic_tail": list(tail),
        "quadratic_biases": list(biases),
        "info": {},
    }
    return check_bqm(problem, JobLimits())


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 7).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.integers(-50, 50).map(float)),
                max_size=20,
            ),
        )
    )
)
def test_the_matrix_from_the_arrays_is_tabus_matrix_of_dimods_model(case: tuple[int, Any]) -> None:
    """Pairs listed twice, both ways or of one variable with itself add up as dimod adds them."""
    n, pairs = case
    model = decoded(n, pairs)
    out = np.full((n, n), 7.0)
    assert model.write_tabu_matrix(out)
    bqm = model.bqm()
    assert np.allclose(out, tabu_matrix(bqm), rtol=0, atol=1e-9)
    assert model.offset == bqm.offset and model.labels == list(bqm.variables)


def test_the_matrix_is_written_only_into_a_whole_contiguous_array() -> None:
    with pytest.raises(ValueError, match="C-contiguous 4 x 4"):
        decoded(4, [(0, 1, 2.0)]).write_tabu_matrix(np.zeros((4, 8))[:, ::2])


def test_a_spin_model_is_left_to_dimods_change_of_vartype() -> None:
    model = decoded(4, [(0, 1, 2.0), (1, 3, -1.0)], "SPIN")
    out = np.zeros((4, 4))
    assert not model.write_tabu_matrix(out) and not out.any()
    block = SharedQubo.create(model)
    try:
        assert np.array_equal(block.matrix(), tabu_matrix(to_binary(model.bqm())))
        assert block.spin and block.offset == to_binary(model.bqm()).offset
    finally:
        block.release()


async def test_a_dense_jobs_search_gets_its_matrix_before_dimods_model_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The matrix goes to tabu first; dimod's model (the floor's, the scoring's) is built after."""
    bqm = random_bqm(200, 1.0, 9)  # dense and large enough to share
    model = check_bqm(bqm.to_serializable(use_bytes=False), JobLimits())
    order: list[str] = []
    write, build = DecodedBqm.write_tabu_matrix, DecodedBqm.bqm

    def writing(self: DecodedBqm, out: Any) -> bool:
        order.append("matrix")
        return write(self, out)

    def building(self: DecodedBqm) -> dimod.BinaryQuadraticModel:
        order.append("model")
        return build(self)

    monkeypatch.setattr(DecodedBqm, "write_tabu_matrix", writing)
    monkeypatch.setattr(DecodedBqm, "bqm", building)
    portfolio = Portfolio(SolversConfig(workers=1, auto=["tabu"]))
    try:
        portfolio.warm_up(["tabu"])
        best, candidates = await portfolio.solve(model, "auto", time.time() + 1.5)
    finally:
        portfolio.close()
    assert order[:2] == ["matrix", "model"]
    tabu = next(c for c in candidates if c.solver == "tabu")
    assert tabu.status == "ok" and tabu.details["model"] == "shared matrix", tabu.reason
    assert tabu.sample is not None and tabu.energy == sample_energy(bqm, tabu.sample)
    assert best is not None and best.energy is not None and best.energy <= tabu.energy
