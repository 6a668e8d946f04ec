"""The broker-config check (``qxedge.connectors.broker_check``) on the config the project ships.
What the settings it asks for protect against, on a real broker: tests/integration/test_reliability.py."""

from __future__ import annotations

from qxedge.connectors.broker_check import check_mosquitto_conf
from qxedge.testing import ROOT


def test_the_project_broker_config_has_the_settings_qxedge_needs() -> None:
    text = (ROOT / "configs" / "mosquitto" / "mosquitto.conf").read_text()
    assert check_mosquitto_conf(text) == []
    assert any("persistence is off" in p for p in check_mosquitto_conf(""))
