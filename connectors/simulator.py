"""A virtual plant: motor-driven assets (pumps, fans) with temperature, power and vibration.

Physics, per asset, with ``load`` the fraction of rated duty in [0, 1]:

- demand follows a daily pattern (``day_s`` seconds per simulated day) plus a slow random walk; the
  load is the demand capped by the latest setpoint received for the asset (1.0 = no derating);
- ``power`` [kW] = rated_kw x (0.12 + 0.88 x load) with 1 % noise;
- ``temp`` [°C] follows ambient (daily swing) + 40 x load through a first-order lag (tau 60 s);
- ``vibration`` [mm/s RMS] = 1.0 + 1.6 x load with noise;
- ``load_cap``: the setpoint the asset currently applies (its echo, for the agent's read-back).

On/off ``loads`` (compressors, ovens, chillers: the production day's schedulable loads) draw their
rated power (with 1 % noise) while on and 2 % of it in standby; a setpoint of 0.5 or more switches one
on. They publish ``power`` and ``load_cap`` (1.0 on, 0.0 off). Every tick the plant's total power and
the loads that are on go to ``meter`` (what the demo bills and checks against the contracted peak).

Faults ramp in over ``ramp_s``: ``bearing`` adds vibration and makes it erratic; ``overheat`` (cooling
loss) doubles the temperature rise over ambient and adds 10 °C, at the same load.

:class:`PlantModel` is pure and deterministic for a seed (the model is trained on it through
agent/replay.py); :class:`SimulatedPlant` runs it against an MQTT broker, publishing readings and
applying the setpoints received on ``qx/v1/{site}/setpoints/#``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qxedge.connectors.mqtt import BrokerConfig, site_topic
from qxedge.connectors.readings import ReadingBatch

log = logging.getLogger(__name__)

SIGNALS = ("temp", "power", "vibration")
FaultKind = Literal["bearing", "overheat"]


class SimAsset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    rated_kw: float = Field(18.0, gt=0, le=10_000)


class SimLoad(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    rated_kw: float = Field(gt=0, le=10_000)


class SimFault(BaseModel):
    model_config = ConfigDict(extra="forbid")
    asset: str
    kind: FaultKind
    at_s: float = Field(ge=0, description="seconds after the simulator starts")
    ramp_s: float = Field(5.0, ge=0)
    severity: float = Field(1.0, gt=0, le=3)


class FaultCommand(BaseModel):
    """JSON on ``qx/v1/{site}/simulator/fault``: inject a fault into a running simulator now."""

    model_config = ConfigDict(extra="forbid")
    asset: str = Field(description="the asset's name (pump1) or id (line1/pump1)")
    kind: FaultKind
    ramp_s: float = Field(5.0, ge=0)
    severity: float = Field(1.0, gt=0, le=3)


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line: str = Field("line1", pattern=r"^[A-Za-z0-9_.-]+$")
    topic: str = Field("plant/{line}/{asset}/{signal}", description="publish topic template")
    period_s: float = Field(0.1, ge=0.001, le=60, description="one reading per signal per period")
    batch: bool = Field(False, description='publish one {"values": ...} message per asset and period')
    day_s: float = Field(3600.0, gt=0, description="length of one simulated day")
    seed: int = 7
    assets: list[SimAsset] = Field(
        default_factory=lambda: [
            SimAsset(name="pump1", rated_kw=15.0),
            SimAsset(name="pump2", rated_kw=18.5),
            SimAsset(name="fan1", rated_kw=22.0),
            SimAsset(name="pump3", rated_kw=18.5),
        ],
        min_length=1,
    )
    loads: list[SimLoad] = Field(default_factory=list, description="on/off loads (switched by setpoints)")
    faults: list[SimFault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SimulatorConfig:
        names = [a.name for a in self.assets] + [load.name for load in self.loads]
        if len(set(names)) != len(names):
            raise ValueError("asset names must be unique")
        for fault in self.faults:
            if fault.asset not in names:
                raise ValueError(f"fault on unknown asset {fault.asset!r} (assets: {', '.join(names)})")
        return self


@dataclass(slots=True)
class _AssetState:
    rated_kw: float
    phase: float
    drift: float = 0.0
    temp_rise: float = 0.0
    cap: float = 1.0
    faults: list[SimFault] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MeterSample:
    ts: float
    total_kw: float
    loads_on: frozenset[str]


class PlantModel:
    """Deterministic plant physics; ``step(t)`` returns one reading per asset and signal at time t."""

    TAU_S = 60.0

    def __init__(self, config: SimulatorConfig) -> None:
        import numpy as np  # only where a plant is simulated: loading a config needs no NumPy

        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.assets = {
            f"{config.line}/{a.name}": _AssetState(a.rated_kw, phase=float(self.rng.uniform(0, 0.3)))
            for a in config.assets
        }
        self.loads = {f"{config.line}/{load.name}": [load.rated_kw, False] for load in config.loads}
        self.meter: deque[MeterSample] = deque(maxlen=1_000_000)  # bounded for long simulations
        self.t = 0.0
        for fault in config.faults:
            self.assets[f"{config.line}/{fault.asset}"].faults.append(fault)

    def set_cap(self, asset: str, cap: float) -> bool:
        if asset in self.loads:
            self.loads[asset][1] = cap >= 0.5
            return True
        state = self.assets.get(asset)
        if state is None:
            return False
        state.cap = min(1.0, max(0.0, cap))
        return True

    def inject(self, asset: str, kind: FaultKind, *, ramp_s: float = 5.0, severity: float = 1.0) -> None:
        self.assets[asset].faults.append(
            SimFault(asset=asset, kind=kind, at_s=self.t, ramp_s=ramp_s, severity=severity)
        )

    def load(self, asset: str) -> float:
        state = self.assets[asset]
        day = 2 * math.pi * (self.t / self.config.day_s + state.phase)
        demand = 0.62 + 0.28 * math.sin(day) + state.drift
        return min(max(demand, 0.15), 1.0, state.cap)

    def _fault_level(self, state: _AssetState, kind: FaultKind) -> float:
        level = 0.0
        for f in state.faults:
            if f.kind == kind and self.t >= f.at_s:
                ramp = 1.0 if f.ramp_s == 0 else min(1.0, (self.t - f.at_s) / f.ramp_s)
                level += f.severity * ramp
        return level

    def step(self, t: float, into: ReadingBatch, ts: float | None = None) -> None:
        """Advance to time ``t`` (seconds since start) and append one reading per signal and asset."""
        dt = max(0.0, t - self.t)
        self.t = t
        stamp = t if ts is None else ts
        rng = self.rng
        ambient = 25.0 + 5.0 * math.sin(2 * math.pi * (t / self.config.day_s - 0.25))
        total_kw = 0.0
        for name, s in self.assets.items():
            s.drift = min(0.1, max(-0.1, s.drift + rng.normal(0, 0.002) * math.sqrt(dt)))
            load = self.load(name)
            bearing = self._fault_level(s, "bearing")
            overheat = self._fault_level(s, "overheat")
            target_rise = 40.0 * load * (1 + overheat) + 10.0 * overheat
            s.temp_rise += (target_rise - s.temp_rise) * (1 - math.exp(-dt / self.TAU_S))
            power = s.rated_kw * (0.12 + 0.88 * load) * (1 + rng.normal(0, 0.01))
            temp = ambient + s.temp_rise + rng.normal(0, 0.3)
            vib_noise = 0.08 * (1 + 4 * bearing)
            vibration = 1.0 + 1.6 * load + 2.5 * bearing + abs(rng.normal(0, vib_noise))
            into.append(name, "temp", stamp, round(temp, 3))
            into.append(name, "power", stamp, round(power, 3))
            into.append(name, "vibration", stamp, round(vibration, 4))
            into.append(name, "load_cap", stamp, s.cap)  # the echo of the last setpoint applied
            total_kw += power
        for name, (rated_kw, on) in self.loads.items():
            power = rated_kw * (1.0 if on else 0.02) * (1 + rng.normal(0, 0.01))
            into.append(name, "power", stamp, round(power, 3))
            into.append(name, "load_cap", stamp, 1.0 if on else 0.0)
            total_kw += power
        loads_on = frozenset(n for n, (_, is_on) in self.loads.items() if is_on)
        self.meter.append(MeterSample(stamp, total_kw, loads_on))

    def warm_up(self) -> None:
        """Start with temperatures settled at the initial load."""
        for name, s in self.assets.items():
            s.temp_rise = 40.0 * self.load(name)


class SimulatedPlant:
    """Runs a PlantModel against a broker: readings out, setpoints in. Use ``async with`` then ``run()``."""

    def __init__(self, config: SimulatorConfig, broker: BrokerConfig, site: str) -> None:
        self.config = config
        self.site = site
        self.model = PlantModel(config)
        self.model.warm_up()
        self.published = 0
        self.setpoints_applied = 0
        self.setpoints_rejected = 0
        from qxedge.connectors.mqtt import MqttClient  # only where a plant runs: a config needs no paho

        self._mqtt = MqttClient(broker, role="simulator")
        self._started = 0.0

    async def __aenter__(self) -> SimulatedPlant:
        await self._mqtt.__aenter__()
        try:
            self._setpoints = await self._mqtt.subscribe(site_topic(self.site, "setpoints/#"), qos=1)
            self._commands = await self._mqtt.subscribe(site_topic(self.site, "simulator/fault"), qos=1)
        except BaseException:
            await self._mqtt.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._mqtt.__aexit__(*exc_info)

    def _topic(self, asset: str, signal: str | None) -> str:
        line, name = asset.split("/", 1)
        topic = self.config.topic.format(line=line, asset=name, signal=signal or "")
        return topic.rstrip("/") if signal is None else topic

    async def run(self, duration_s: float | None = None) -> None:
        """Publish readings every ``period_s``, apply setpoints and fault commands, until cancelled or
        ``duration_s``."""
        self._started = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._apply_setpoints(), name="simulator-setpoints")
            tasks.create_task(self._apply_fault_commands(), name="simulator-faults")
            try:
                await self._publish_loop(duration_s)
            finally:
                self._setpoints.close()
                self._commands.close()

    async def _publish_loop(self, duration_s: float | None) -> None:
        period = self.config.period_s
        tick = 0
        while duration_s is None or tick * period < duration_s:
            t = tick * period
            batch = ReadingBatch()
            self.model.step(t, batch, ts=time.time())
            self._publish(batch)
            tick += 1
            await asyncio.sleep(max(0.0, self._started + tick * period - time.monotonic()))

    def _publish(self, batch: ReadingBatch) -> None:
        if self.config.batch:
            per_asset: dict[str, dict[str, float]] = {}
            for asset, signal, value in zip(batch.assets, batch.signals, batch.values, strict=True):
                per_asset.setdefault(asset, {})[signal] = value
            ts = batch.ts[0]
            for asset, values in per_asset.items():
                self._mqtt.publish(self._topic(asset, None), json.dumps({"ts": ts, "values": values}))
                self.published += 1
            return
        for asset, signal, ts, value in zip(batch.assets, batch.signals, batch.ts, batch.values, strict=True):
            self._mqtt.publish(self._topic(asset, signal), json.dumps({"ts": ts, "value": value}))
            self.published += 1

    async def _apply_setpoints(self) -> None:
        async for batch in self._setpoints:
            for topic, payload in batch:
                try:
                    doc = json.loads(payload)
                    asset, value = doc["asset"], float(doc["value"])
                    if not math.isfinite(value) or not self.model.set_cap(asset, value):
                        raise ValueError(f"unknown asset or invalid value in {doc!r}")
                except (ValueError, KeyError, TypeError) as exc:
                    self.setpoints_rejected += 1
                    log.warning("simulator ignored setpoint on %s: %s", topic, exc)
                    continue
                self.setpoints_applied += 1
                log.info("simulator: %s load capped at %.2f", asset, value)

    async def _apply_fault_commands(self) -> None:
        async for batch in self._commands:
            for _topic, payload in batch:
                try:
                    cmd = FaultCommand.model_validate_json(payload)
                    asset = cmd.asset if "/" in cmd.asset else f"{self.config.line}/{cmd.asset}"
                    if asset not in self.model.assets:
                        raise ValueError(f"unknown asset {cmd.asset!r}")
                except ValueError as exc:  # pydantic's ValidationError is a ValueError
                    log.warning("simulator ignored a fault command: %s", str(exc).replace("\n", " "))
                    continue
                self.model.inject(asset, cmd.kind, ramp_s=cmd.ramp_s, severity=cmd.severity)
                log.warning("simulator: %s fault injected on %s", cmd.kind, asset)
