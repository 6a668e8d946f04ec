"""hybrid/statevector.py: the QAOA state without gates, against PennyLane's gates on lightning.qubit.

The CUDA kernels of ``qxedge.gpu`` need a GPU: ``./run bench qaoa_gpu`` checks them against
lightning.qubit to 1e-9 where one is lent. Here: the NumPy back-end, the pass plan of the kernels,
the fallback without CuPy, the config checks and ``solve_qaoa`` on ``qxedge.cpu``."""

import importlib.util
import time
from pathlib import Path

import dimod
import numpy as np
import pennylane as qml
import pytest
from pydantic import ValidationError

from qxedge.agent.cli import main
from qxedge.hybrid.portfolio import Portfolio, SolversConfig, run_solver
from qxedge.hybrid.qaoa import PennyLaneCircuit, QaoaConfig, ising_z
from qxedge.hybrid.solvers import all_energies
from qxedge.hybrid.statevector import LANE_BITS, CpuStatevector, gpu_passes
from qxedge.testing import ROOT, optimum, random_bqm


@pytest.mark.parametrize("n", [1, 2, 5, 8, 11])
def test_cpu_state_equals_lightning_amplitude_for_amplitude(n: int) -> None:
    rng = np.random.default_rng(n)
    h = rng.normal(size=n)
    j = np.triu(rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.6), 1)
    gammas, betas = rng.normal(size=3), rng.normal(size=3)
    lightning = PennyLaneCircuit(qml.device("lightning.qubit", wires=n), h, j, 3, "state")
    ref = np.asarray(lightning.distribution(gammas, betas))
    got = CpuStatevector(h, j).state(gammas, betas)
    assert np.abs(got - ref).max() < 1e-12  # the global phase too
    assert CpuStatevector(h, j).probs(gammas, betas) == pytest.approx(np.abs(ref) ** 2, abs=1e-12)


@pytest.mark.parametrize("vartype", [dimod.BINARY, dimod.SPIN])
def test_ising_diagonal_plus_offset_is_the_energy_of_every_assignment(vartype: dimod.Vartype) -> None:
    bqm = random_bqm(9, 0.5, seed=4, vartype=vartype)
    binary = bqm.change_vartype(dimod.BINARY, inplace=False)
    h, j, offset = ising_z(binary)
    dense = np.zeros((9, 9))
    for (a, b), coupling in j.items():
        dense[a, b] = coupling
    assert CpuStatevector(h, dense).diagonal + offset == pytest.approx(all_energies(binary), abs=1e-9)


def test_the_phase_by_energy_level_equals_the_phase_of_every_state() -> None:
    """Integer QUBO biases give few distinct energies: the phase is computed per level, same values."""
    bqm = random_bqm(16, 0.5, seed=8)
    h, j, _ = ising_z(bqm)
    dense = np.zeros((16, 16))
    for (a, b), coupling in j.items():
        dense[a, b] = coupling
    by_level = CpuStatevector(h, dense)
    assert by_level.levels is not None and len(by_level.levels[0]) * 8 <= 1 << 16
    every_state = CpuStatevector(h, dense)
    every_state.levels = None
    gammas, betas = np.array([0.01, 0.02]), np.array([0.7, 0.3])
    assert np.array_equal(by_level.state(gammas, betas), every_state.state(gammas, betas))
    assert CpuStatevector(np.array([0.1, 0.2, 0.3]), np.zeros((3, 3))).levels is None  # 8 levels of 8


@pytest.mark.parametrize("group_bits", [1, 3, 4, 5])
def test_the_gpu_passes_mix_every_bit_once_and_the_first_holds_the_lanes(group_bits: int) -> None:
    for n in range(1, 35):
        passes = gpu_passes(n, group_bits)
        bits = [b for q0, k, _ in passes for b in range(q0, q0 + k)]
        lanes = passes[0][2]
        assert lanes == min(LANE_BITS, n) == passes[0][0]  # the lane bits sit below the first group
        assert sorted(bits + list(range(lanes))) == list(range(n)), (n, passes)
        assert all(lanes_ == 0 for *_, lanes_ in passes[1:])
        assert all(1 <= k <= group_bits for _, k, _ in passes[1:])


def test_solve_on_qxedge_cpu_evaluates_the_same_circuit_as_lightning() -> None:
    bqm = random_bqm(8, 0.5, seed=12)
    cfg = SolversConfig(qaoa=QaoaConfig(device="qxedge.cpu", layers=2, shots=200))
    candidate = run_solver("qaoa", cfg, bqm, time.time() + 10)
    assert candidate.status == "ok" and candidate.details["device"] == "qxedge.cpu"
    assert candidate.energy == pytest.approx(optimum(bqm))  # n = 8: the polish reaches it
    # the objective it optimised is lightning's, for the same angles
    reference = run_solver(
        "qaoa", cfg.model_copy(update={"qaoa": QaoaConfig(layers=2, shots=200)}), bqm, time.time() + 10
    )
    assert candidate.details["expectation"] == pytest.approx(reference.details["expectation"], rel=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_qxedge_gpu_without_cupy_falls_back_to_qxedge_cpu_and_says_so() -> None:
    cfg = SolversConfig(qaoa=QaoaConfig(device="qxedge.gpu", layers=1, maxiter=5, shots=50))
    candidate = run_solver("qaoa", cfg, random_bqm(6, 0.5, seed=2), time.time() + 5)
    assert candidate.status == "ok"
    assert candidate.details["device"].startswith("qxedge.cpu (qxedge.gpu unavailable: ModuleNotFoundError")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_solver_processes_warm_up_for_qxedge_gpu_without_cupy() -> None:
    portfolio = Portfolio(SolversConfig(workers=1, qaoa=QaoaConfig(device="qxedge.gpu")))
    try:
        portfolio.warm_up()  # nothing to compile here: it must not fail the worker's start
    finally:
        portfolio.close()


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_check_config_says_when_qxedge_gpu_would_run_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "configs" / "datacenter.yaml").read_text()
    (tmp_path / "dc.yaml").write_text(text.replace("device: lightning.qubit", "device: qxedge.gpu"))
    assert main(["check-config", str(tmp_path / "dc.yaml")]) == 0
    assert (
        "QAOA on qxedge.gpu (CuPy is not installed here: it would run on qxedge.cpu)"
        in capsys.readouterr().out
    )
    (tmp_path / "bad.yaml").write_text(
        text.replace("device: lightning.qubit", "device: qxedge.gpu\n    device_options: {dtype: complex32}")
    )
    assert main(["check-config", str(tmp_path / "bad.yaml")]) == 2
    assert "solvers.qaoa: device_options.dtype must be complex64 or complex128" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "options", "error"),
    [
        ("qxedge.gpu", {"dtype": "complex32"}, "dtype must be complex64 or complex128"),
        ("qxedge.gpu", {"group_bits": 6}, "group_bits must be 1..5"),
        ("qxedge.gpu", {"shots": 100}, "qxedge.gpu takes no option shots"),
        ("qxedge.cpu", {"dtype": "complex64"}, "qxedge.cpu takes no option dtype"),
    ],
)
def test_simulator_options_are_checked_with_the_config(
    device: str, options: dict[str, object], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        QaoaConfig(device=device, device_options=options)
    QaoaConfig(device="qxedge.gpu", device_options={"dtype": "complex64", "group_bits": 4})
