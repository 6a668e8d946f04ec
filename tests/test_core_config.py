"""Config helpers of qxedge.core.config: URLs in errors never carry a password."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qxedge.core.config import redact_url, split_service_url

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
    expected = "mqtt://host[:port] or mqtts://host[:port]"
    with pytest.raises(ValueError, match=r"^(?:(?!Hunter2|s3cret).)*$") as info:
        split_service_url(url, ("mqtt", "mqtts"), expected)
    assert "gumi" in str(info.value) or "credentials" in str(info.value)


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
