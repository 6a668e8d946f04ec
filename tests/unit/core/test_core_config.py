"""Config helpers of qxedge.core.config: URLs in errors never carry a password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from qxedge.agent.config import load_config
from qxedge.connectors.mqtt import BrokerConfig, split_url
from qxedge.connectors.opcua import OpcUaConfig
from qxedge.core.config import redact_url, split_service_url
from qxedge.core.errors import ConfigError
from qxedge.testing import ROOT

SECRET = "Hunter2-s3cret"

# a password together with a bad port, a bad scheme, no host, a malformed address
BAD_URLS = [
    f"mqtt://gumi:{SECRET}@broker:88x3",
    f"mqtt://gumi:{SECRET}@broker:99999",
    f"http://gumi:{SECRET}@broker:1883",
    f"gumi:{SECRET}@broker:1883",
    f"mqtt://gumi:{SECRET}@:1883",
    f"mqtt://gumi:{SECRET}@[::1:1883",
    f"mqtt://gumi:{SECRET[:5]}/{SECRET[5:]}@broker:1883",  # a '/' in the password ends the host part
    f"mqtts//gumi:{SECRET}@broker",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_errors_never_echo_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"^(?:(?!Hunter2|s3cret).)*$") as info:
        split_url(url)
    assert "gumi" in str(info.value) or "credentials" in str(info.value)


@pytest.mark.parametrize("url", BAD_URLS)
def test_broker_config_errors_never_echo_the_password(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        BrokerConfig(url=url)
    assert SECRET[:5] not in str(info.value) and SECRET[5:] not in str(info.value)


def test_opcua_endpoint_errors_never_echo_the_password() -> None:
    for endpoint in (f"opc.tcp://op:{SECRET}@plc:48x0", f"tcp://op:{SECRET}@plc:4840"):
        with pytest.raises(ValidationError) as info:
            OpcUaConfig.model_validate({"endpoint": endpoint, "nodes": [], "setpoints": {}})
        assert SECRET not in str(info.value)
        assert "op:***@plc" in str(info.value)


def test_config_error_never_echoes_the_password(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(f"site: s\nbroker:\n  url: mqtt://gumi:{SECRET}@broker:88x3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config, environ={})
    assert SECRET not in str(info.value)
    assert "broker.url: invalid port in 'mqtt://gumi:***@broker:88x3'" in str(info.value)
    env = {"QXEDGE_UPLINK__URL": f"ftp://gumi:{SECRET}@dc:1883"}
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "edge.yaml", environ=env)
    assert SECRET not in str(info.value) and "uplink.url" in str(info.value)


def test_check_config_never_prints_the_password(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(f"site: s\nbroker:\n  url: http://gumi:{SECRET}@broker:1883\n", encoding="utf-8")
    for argv in (
        ["check-config", str(config)],
        ["check-config", str(ROOT / "configs" / "edge.yaml"), "--broker", f"mqtt://gumi:{SECRET}@b:1x"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "qxedge.agent.cli", *argv], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert "gumi:***@" in done.stderr


@given(
    st.sampled_from(["mqtt://", "mqtts://", "opc.tcp://", "", "//", "http:/", "mqtt:"]),
    st.text("abcdefgh", min_size=1, max_size=8),
    st.text("ABCDEFGH0123456789:@/?#%", min_size=1, max_size=24),
    st.text("xyz.:[]", max_size=12),
)
def test_redact_url_masks_every_password(scheme: str, user: str, password: str, host: str) -> None:
    shown = redact_url(f"{scheme}{user}:{password}@{host}")
    assert "@" in shown
    assert not any(c in shown for c in "ABCDEFGH0123456789"), shown


def test_redact_url_masks_a_password_that_looks_like_a_scheme() -> None:
    assert redact_url("gumi:A//B@host") == "gumi:***@host"
    assert redact_url("gumi:A://B@host") == "gumi:***@host"
    assert redact_url("mqtt://gumi:A://B@host") == "mqtt://gumi:***@host"


def test_redact_url_leaves_urls_without_credentials_alone() -> None:
    for url in ("mqtt://broker:1883", "opc.tcp://plc:4840/path", "not a url"):
        assert redact_url(url) == url
    assert redact_url("mqtt://gumi@broker") == "mqtt://gumi@broker"


def test_split_service_url_parts() -> None:
    assert split_service_url("opc.tcp://plc/x", ("opc.tcp",), "opc.tcp://...") == ("opc.tcp", "plc", None)
    with pytest.raises(ValueError, match="not in the endpoint"):
        split_service_url("opc.tcp://u:p@plc", ("opc.tcp",), "opc.tcp://...", "endpoint")
