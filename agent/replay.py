"""Offline replay: the simulated plant through the agent's own feature windows, without a broker.

Used to train the anomaly model (configs/models/build_anomaly_model.py) and to test it, so that
training and serving compute features with exactly the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qxedge.agent.config import WindowConfig
from qxedge.agent.features import FeatureWindow
from qxedge.connectors.readings import ReadingBatch
from qxedge.connectors.simulator import PlantModel, SimulatorConfig

EPOCH = 1.7e9  # replayed readings get realistic epoch timestamps


@dataclass(frozen=True, slots=True)
class Replay:
    features: np.ndarray  # (rows, inputs) float32
    assets: list[str]  # asset of each row
    times: np.ndarray  # seconds since the start of the replay, per row


def replay(
    sim: SimulatorConfig,
    window: WindowConfig,
    inputs: Sequence[str],
    seconds: float,
    *,
    caps: np.random.Generator | None = None,
) -> Replay:
    """Run the plant for ``seconds`` and return one feature row per asset and full window.

    With ``caps``, every minute each asset is derated at random (as setpoints would) from that generator.
    """
    plant = PlantModel(sim)
    plant.warm_up()
    fw = FeatureWindow(window.length_s, window.stats, window.min_samples, window.min_coverage)
    steps = max(1, round(window.every_s / sim.period_s))
    rows, assets, times = [], [], []
    for tick in range(int(seconds / window.every_s)):
        if caps is not None and tick % 60 == 0:
            for name in plant.assets:
                if caps.random() < 0.3:
                    plant.set_cap(name, float(caps.choice([1.0, 1.0, 0.9, 0.8, 0.6, 0.4])))
        batch = ReadingBatch()
        for k in range(steps):
            t = (tick * steps + k + 1) * sim.period_s
            plant.step(t, batch, ts=EPOCH + t)
        elapsed = (tick + 1) * steps * sim.period_s
        m = fw.update(batch, EPOCH + elapsed).matrix(inputs)
        if elapsed >= window.length_s:  # full windows only
            rows.append(m.values)
            assets.extend(m.assets)
            times.extend([elapsed] * len(m.assets))
    return Replay(np.concatenate(rows), assets, np.array(times))
