"""The agent's inference layer against onnxruntime called directly, same model, same batches, same run.

    ./run bench inference [--seconds 1.0]

For batch sizes 1..4096 rows of the shipped anomaly model's 8 features, prints microseconds per call
and rows per second through ``agent.inference.OnnxModel.score`` and through a bare
``InferenceSession.run`` created with the same options, and the overhead of the layer (target: 20 %
at most). Calls alternate between the two in short rounds so drifts of this shared machine hit both.
With the CUDA execution provider available (a GPU box), the same table is printed for it too.

Then one row at a time with the process idle in between (0, 1 and 10 ms of ``time.sleep``), as the
agent calls it (a reading every millisecond or so): median microseconds per call for the layer, the
bare session and, as the baseline of what idling costs any code, a NumPy layer of the same size
(``tanh(x @ w)``). On this machine kind a call after 10 ms of idling costs 15-25x a back-to-back one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qxedge.agent.config import load_config
from qxedge.agent.inference import OnnxModel
from qxedge.testing.bench_results import Results, add_save_option

ROOT = Path(__file__).resolve().parent.parent


def per_call(fn: Callable[[], object], seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(20):
            fn()
        calls += 20
    return elapsed / calls


def table(providers: list[str], seconds: float, results: Results) -> None:
    cfg = load_config(ROOT / "configs" / "edge.yaml", environ={}).models[0]
    cfg = cfg.model_copy(update={"providers": providers})
    model = OnnxModel(cfg)
    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(cfg.path), options, providers=providers)
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    rng = np.random.default_rng(0)
    print(
        f"\nprovider {model.provider}; model {cfg.name} ({len(cfg.inputs)} features), {cfg.threads} thread(s)"
    )
    print(f"  {'rows':>6} {'layer us/call':>14} {'direct us/call':>15} {'layer rows/s':>14} {'overhead':>9}")
    rows_table = results.table(
        f"{model.provider}, model {cfg.name} ({len(cfg.inputs)} features), {cfg.threads} thread(s)",
        ["rows", "layer µs/call", "direct µs/call", "layer rows/s", "overhead %"],
    )
    for rows in (1, 8, 64, 512, 4096):
        x = rng.normal(size=(rows, len(cfg.inputs))).astype(np.float32)
        layer, direct = [], []
        for _ in range(5):  # alternate short rounds
            layer.append(per_call(lambda x=x: model.score(x), seconds / 10))
            direct.append(per_call(lambda x=x: session.run([output], {name: x}), seconds / 10))
        lt, dt = statistics.median(layer), statistics.median(direct)
        print(f"  {rows:>6} {lt * 1e6:>14.1f} {dt * 1e6:>15.1f} {rows / lt:>14,.0f} {lt / dt - 1:>9.1%}")
        rows_table.add(rows, lt * 1e6, dt * 1e6, rows / lt, (lt / dt - 1) * 100)


def spaced(seconds: float, results: Results) -> None:
    cfg = load_config(ROOT / "configs" / "edge.yaml", environ={}).models[0]
    model = OnnxModel(cfg)
    session = ort.InferenceSession(str(cfg.path), providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    x = np.random.default_rng(0).normal(size=(1, len(cfg.inputs))).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(len(cfg.inputs), 64)).astype(np.float32)
    sides: dict[str, Callable[[], object]] = {
        "layer": lambda: model.score(x),
        "direct": lambda: session.run([output], {name: x}),
        "numpy": lambda: np.tanh(x @ w),
    }
    calls = max(20, int(200 * seconds))
    print(f"\none row per call, idle in between (median us/call over {calls} calls)")
    print(f"  {'idle':>6} " + " ".join(f"{side:>8}" for side in sides))
    idle_table = results.table(
        f"one row per call, idle in between (median µs/call over {calls} calls)",
        ["idle ms", *(f"{side} µs" for side in sides)],
    )
    for idle in (0.0, 0.001, 0.01):
        took: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(calls):  # the sides alternate call by call
            for side, fn in sides.items():
                if idle:
                    time.sleep(idle)
                started = time.perf_counter()
                fn()
                took[side].append(time.perf_counter() - started)
        row = " ".join(f"{statistics.median(t) * 1e6:>8.1f}" for t in took.values())
        print(f"  {idle * 1e3:>4g}ms {row}")
        idle_table.add(idle * 1e3, *(statistics.median(t) * 1e6 for t in took.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per batch size and side")
    add_save_option(parser)
    args = parser.parse_args()
    results = Results(__file__, parser, args)
    table(["CPUExecutionProvider"], args.seconds, results)
    spaced(args.seconds, results)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        table(["CUDAExecutionProvider", "CPUExecutionProvider"], args.seconds, results)
    else:
        results.note("CUDAExecutionProvider: not measured (not available in this onnxruntime)")
    results.save()


if __name__ == "__main__":
    main()
