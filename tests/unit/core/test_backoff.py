"""The one reconnect backoff (qxedge.core.backoff), and the reconnect loops that log what they wait."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qxedge.connectors.embedded_broker import free_port
from qxedge.connectors.modbus import DevicePoller, ModbusDevice
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.connectors.opcua import OpcUaConfig
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.sparkplug import SparkplugConfig
from qxedge.core.backoff import Backoff

bounds = st.tuples(
    st.floats(min_value=0.001, max_value=60, allow_nan=False),
    st.floats(min_value=1, max_value=1000, allow_nan=False),
).map(lambda lh: (lh[0], lh[0] * lh[1]))


@given(bounds, st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_delays_are_equal_jitter_of_a_doubling_capped_ceiling(
    lh: tuple[float, float], tries: int, seed: int
) -> None:
    low, high = lh
    backoff = Backoff(low, high, rng=random.Random(seed))
    for n in range(tries):
        ceiling = min(high, low * 2**n)
        assert backoff.ceiling == pytest.approx(ceiling)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling * (1 + 1e-12)


@given(bounds, st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_reset_starts_again_from_low(lh: tuple[float, float], tries: int, seed: int) -> None:
    low, high = lh
    backoff = Backoff(low, high, rng=random.Random(seed))
    for _ in range(tries):
        backoff.next_delay()
    backoff.reset()
    assert backoff.ceiling == low
    assert low / 2 <= backoff.next_delay() <= low


def test_delays_are_jittered_and_grow() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    assert len(set(delays)) == len(delays)
    assert max(delays[:1]) <= 0.5 and min(delays[3:]) >= 2.0


@pytest.mark.parametrize(("low", "high"), [(0, 1), (-1, 1), (2, 1)])
def test_bounds_are_checked(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="0 < low <= high"):
        Backoff(low, high)


def test_broker_config_rejects_a_backoff_that_shrinks() -> None:
    with pytest.raises(ValueError, match="reconnect_min_s must not exceed reconnect_max_s"):
        BrokerConfig(reconnect_min_s=10, reconnect_max_s=5)


_STATED = re.compile(r"(?:next try|reconnecting) (?:with)?in (\d+\.\d+) s")


async def _stated_and_slept(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    run: Callable[[], Awaitable[None]],
    logger: str,
    level: int,
) -> tuple[list[float], list[float]]:
    """Run ``run`` until its reconnect loop logged three waits: (the waits logged, every sleep)."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: object = None) -> object:
        slept.append(delay)
        return await real_sleep(min(delay, 0.01), result)  # the test need not wait out the backoff

    def stated() -> list[float]:
        return [float(m.group(1)) for r in caplog.records if (m := _STATED.search(r.getMessage()))]

    caplog.set_level(level, logger=logger)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    task = asyncio.ensure_future(run())
    try:
        async with asyncio.timeout(60):
            while len(stated()) < 3:
                await real_sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return stated(), slept


def _each_stated_wait_is_slept(stated: list[float], slept: list[float]) -> None:
    assert len(stated) >= 3
    for wait in stated:
        assert any(abs(wait - s) <= 0.005 for s in slept), (wait, slept)


async def test_mqtt_reconnect_log_states_the_wait(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrokerConfig(
        url=f"mqtt://127.0.0.1:{free_port()}", reconnect_min_s=0.2, reconnect_max_s=0.8, connect_timeout_s=2
    )

    async def run() -> None:
        async with MqttClient(config, start_offline=True):
            await asyncio.Event().wait()

    stated, slept = await _stated_and_slept(
        caplog, monkeypatch, run, "qxedge.connectors.mqtt._client", logging.WARNING
    )
    _each_stated_wait_is_slept(stated, slept)
    assert all(0.1 <= wait <= 0.8 for wait in stated), stated


async def test_modbus_reconnect_log_states_the_wait(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = ModbusDevice.model_validate(
        {
            "name": "plc1",
            "host": "127.0.0.1",
            "port": free_port(),
            "timeout_s": 1,
            "points": [{"asset": "line1/a", "signal": "temp", "address": 0}],
        }
    )
    poller = DevicePoller(device, "modbus[0]", (0.2, 0.8))
    stated, slept = await _stated_and_slept(
        caplog,
        monkeypatch,
        lambda: poller.run(lambda batch: None),
        "qxedge.connectors.modbus._poller",
        logging.DEBUG,
    )
    _each_stated_wait_is_slept(stated, slept)


async def test_sparkplug_reconnect_log_states_the_wait(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = BrokerConfig(
        url=f"mqtt://127.0.0.1:{free_port()}", reconnect_min_s=0.2, reconnect_max_s=0.8, connect_timeout_s=2
    )

    async def propose(asset: str, value: float, source: str, data_ts: float) -> None:
        return None

    link = PlantLink("s", broker, lambda batch: None, propose)
    connector = SparkplugConfig(group_id="g", edge_node_id="n").connector("sparkplug[0]")
    stated, slept = await _stated_and_slept(
        caplog, monkeypatch, lambda: connector.run(link), "qxedge.connectors.sparkplug", logging.WARNING
    )
    _each_stated_wait_is_slept(stated, slept)


async def test_opcua_reconnect_log_states_the_wait(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = OpcUaConfig.model_validate(
        {
            "endpoint": f"opc.tcp://127.0.0.1:{free_port()}",
            "nodes": [{"node": "ns=2;s=A.Temp", "asset": "line1/a", "signal": "temp"}],
            "request_timeout_s": 1,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 0.8,
        }
    )

    async def propose(asset: str, value: float, source: str, data_ts: float) -> None:
        return None

    link = PlantLink("s", BrokerConfig(), lambda batch: None, propose)
    connector = config.connector("opcua[0]")
    stated, slept = await _stated_and_slept(
        caplog,
        monkeypatch,
        lambda: connector.run(link),
        "qxedge.connectors.opcua._connector",
        logging.WARNING,
    )
    _each_stated_wait_is_slept(stated, slept)
