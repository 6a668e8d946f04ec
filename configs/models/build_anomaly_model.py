"""Train and export configs/models/anomaly.onnx from simulated normal operation.

    pip install -e '.[train]'      # scikit-learn, skl2onnx, onnx: never needed at run time
    ./run model     # = python configs/models/build_anomaly_model.py [--config FILE] [--out FILE]

The model is an autoencoder (scikit-learn MLPRegressor, 8-16-4-16-8, tanh) trained to reproduce the
standardised feature vector the config's first model declares, on windows computed by the agent's own
FeatureWindow over the simulator's plant physics (connectors/simulator.py): random ratings, demand and
derating setpoints, no faults. The exported graph takes the raw features and outputs

    score = mean((standardise(x) - reconstruction)^2) / q995

where q995 is the 99.5th percentile of that error on the training data: 1.0 is the edge of normal
operation, and a score of 4 is four times worse than the worst 0.5 % of normal windows. An MLP runs in
microseconds per call where a tree ensemble took ~1 ms (FIELD-NOTES.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from qxedge.agent.config import WindowConfig
from qxedge.agent.models.training import export  # the graph `qxedge train` exports too
from qxedge.agent.replay import replay
from qxedge.connectors.simulator import SimAsset, SimFault, SimulatorConfig

HERE = Path(__file__).resolve().parent


def training_set(raw: dict, inputs: list[str], episodes: int, seconds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    window = WindowConfig.model_validate(raw.get("window", {}))
    base = SimulatorConfig.model_validate({**raw.get("simulator", {}), "faults": []})
    parts = []
    for episode in range(episodes):
        sim = base.model_copy(
            update={
                "seed": seed + episode,
                "day_s": float(rng.choice([base.day_s / 4, base.day_s, base.day_s * 4])),
                "assets": [SimAsset(name=f"a{i}", rated_kw=float(rng.uniform(10, 30))) for i in range(6)],
            }
        )
        parts.append(replay(sim, window, inputs, seconds, caps=rng).features)
        print(f"  episode {episode + 1}/{episodes}: {sum(len(p) for p in parts)} windows")
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(HERE.parent / "edge.yaml"))
    parser.add_argument("--out", default=str(HERE / "anomaly.onnx"))
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=1800)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--hidden", default="16,4,16", help="hidden layer sizes; the middle one is the code")
    args = parser.parse_args()

    raw = yaml.safe_load(Path(args.config).read_text())
    inputs: list[str] = raw["models"][0]["inputs"]
    print(f"simulating normal operation: {args.episodes} episodes x {args.seconds} s, features {inputs}")
    x = training_set(raw, inputs, args.episodes, args.seconds, args.seed)
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    mlp = MLPRegressor(
        hidden_layer_sizes=tuple(int(h) for h in args.hidden.split(",")),
        activation="tanh",
        max_iter=400,
        early_stopping=True,
        random_state=args.seed,
        tol=1e-5,
    )
    mlp.fit(xs, xs)
    err = ((xs - mlp.predict(xs)) ** 2).mean(axis=1)
    q995 = float(np.quantile(err, 0.995))
    print(f"trained on {len(x)} windows; reconstruction error q50={np.median(err):.4f} q995={q995:.4f}")

    model = export(
        scaler,
        mlp,
        q995,
        len(inputs),
        {
            "qxedge.inputs": ",".join(inputs),
            "qxedge.score": "reconstruction MSE / q995 of normal operation",
            "qxedge.training": f"{args.episodes}x{args.seconds}s simulated normal operation "
            f"(seed {args.seed})",
        },
    )
    Path(args.out).write_bytes(model.SerializeToString())
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes)")

    # Sanity check on the exported graph: a bearing fault and an overheat must stand out.
    import onnxruntime as ort

    session = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    window = WindowConfig.model_validate(raw.get("window", {}))
    base = SimulatorConfig.model_validate({**raw.get("simulator", {}), "faults": []})
    for kind in ("bearing", "overheat"):
        sim = base.model_copy(
            update={
                "seed": 1,
                "faults": [SimFault(asset=base.assets[0].name, kind=kind, at_s=300, ramp_s=30)],
            }
        )
        run = replay(sim, window, inputs, 900)
        scores = session.run(["score"], {"features": run.features})[0][:, 0]
        hit = np.array([a.endswith(f"/{base.assets[0].name}") for a in run.assets])
        at = run.times
        normal, faulty = ~hit | (at < 300), hit & (at > 300 + 30 + window.length_s)
        print(
            f"  {kind}: normal windows max score {scores[normal].max():.2f}, "
            f"faulty windows median score {np.median(scores[faulty]):.1f}"
        )


if __name__ == "__main__":
    main()
