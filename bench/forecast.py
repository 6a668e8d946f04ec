"""The base-load forecast against persistence, on the simulated plant.

    ./run bench forecast [--days 7] [--slots 24] [--horizon 24] [--seed 7] [--save]

The simulator's plant (configs/edge.yaml's ``simulator:`` assets, no on/off loads) runs offline for
``--days`` simulated days of ``day_s`` seconds (its daily demand pattern plus a slow random walk), sampled
once a simulated second; each day has ``--slots`` slots. At every slot boundary both forecasters
(:class:`qxedge.agent.forecast.BaseLoadForecast`, ``method: blend`` with the defaults of
``planning.forecast``, and ``method: persistence``: the last slot's mean for every slot ahead) forecast
the mean base load of the next ``--horizon`` slots, and learn the slot that just closed. The error is
the mean absolute error (kW) over every forecast whose slot lies in the simulation, after the first day
(which both spend learning; the blend is persistence on it). Several seeds (``--seeds``) give a spread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import yaml

from qxedge.agent.forecast import BaseLoadForecast
from qxedge.agent.settings import ForecastConfig
from qxedge.connectors.readings import ReadingBatch
from qxedge.connectors.simulator import PlantModel, SimulatorConfig
from qxedge.testing import EDGE_YAML
from qxedge.testing.bench_results import Results, add_save_option


def slot_means(seed: int, days: int, slots: int) -> list[float]:
    """The plant's mean base load (kW) in each slot of ``days`` simulated days."""
    sim = SimulatorConfig.model_validate(yaml.safe_load(EDGE_YAML.read_text())["simulator"])
    model = PlantModel(sim.model_copy(update={"seed": seed, "loads": [], "faults": []}))
    model.warm_up()
    per_slot = sim.day_s / slots
    samples = int(per_slot)  # one a simulated second
    means = []
    batch = ReadingBatch()
    for k in range(days * slots):
        total = 0.0
        for i in range(samples):
            model.step(k * per_slot + (i + 1) * per_slot / samples, batch)
            total += model.meter[-1].total_kw
        batch = ReadingBatch()
        means.append(total / samples)
    return means


def errors(means: list[float], slots: int, horizon: int, method: str) -> list[float]:
    """Absolute errors of every forecast made after the first day."""
    forecast = BaseLoadForecast(ForecastConfig(method=method))  # type: ignore[arg-type]
    out = []
    for k, kw in enumerate(means[:-1]):
        forecast.observe(k % slots, kw)
        ahead = [j for j in range(k + 1, min(len(means), k + 1 + horizon))]
        predicted = forecast.predict([j % slots for j in ahead], None)
        assert predicted is not None
        if k + 1 >= slots:
            out.extend(abs(p - means[j]) for p, j in zip(predicted, ahead, strict=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7, help="simulated days (the first is learning only)")
    parser.add_argument("--slots", type=int, default=24, help="slots per day")
    parser.add_argument("--horizon", type=int, default=24, help="slots forecast at each boundary")
    parser.add_argument("--seeds", type=int, default=5, help="simulator seeds (7, 8, ...)")
    parser.add_argument("--quick", action="store_true", help="3 days, 2 seeds (a smoke test)")
    add_save_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.days, args.seeds = 3, 2
    results = Results(__file__, parser, args)
    table = results.table(
        "Base-load forecast, mean absolute error over the horizon (kW)",
        ["seed", "persistence MAE", "blend MAE", "blend / persistence", "next slot: persistence", "blend"],
    )
    ratios = []
    started = time.perf_counter()
    for seed in range(7, 7 + args.seeds):
        means = slot_means(seed, args.days, args.slots)
        persistence = statistics.fmean(errors(means, args.slots, args.horizon, "persistence"))
        blend = statistics.fmean(errors(means, args.slots, args.horizon, "blend"))
        near = [statistics.fmean(errors(means, args.slots, 1, m)) for m in ("persistence", "blend")]
        ratios.append(blend / persistence)
        table.add(seed, round(persistence, 3), round(blend, 3), round(blend / persistence, 3), *near)
        print(
            f"seed {seed}: persistence MAE {persistence:.3f} kW, blend {blend:.3f} kW, "
            f"ratio {ratios[-1]:.3f}; next slot only: persistence {near[0]:.3f} kW, blend {near[1]:.3f} kW"
        )
    summary = (
        f"{args.days} days x {args.slots} slots, horizon {args.horizon}: blend / persistence "
        f"{statistics.fmean(ratios):.3f} on average over {args.seeds} seeds "
        f"(best {min(ratios):.3f}, worst {max(ratios):.3f}); {time.perf_counter() - started:.1f} s"
    )
    print(summary)
    results.note(summary)
    results.save()


if __name__ == "__main__":
    main()
