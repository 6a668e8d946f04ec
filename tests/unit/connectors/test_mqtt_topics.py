"""qxedge's topics and MQTT topic filters (``qxedge.connectors.mqtt.topics``), pure."""

from __future__ import annotations

import pytest

from qxedge.connectors.mqtt import check_filter, filters_overlap, site_topic, topic_matches
from qxedge.hybrid.wire import jobs_topic, results_topic


def test_every_site_topic_is_in_the_namespace() -> None:
    assert site_topic("gumi", "telemetry") == "qx/v1/gumi/telemetry"
    assert jobs_topic("gumi") == "qx/v1/gumi/jobs"
    assert results_topic("gumi", "j1") == "qx/v1/gumi/results/j1"
    assert topic_matches("qx/v1/+/results/#", results_topic("gumi", "j1"))


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a+/b", "#/a"])
def test_an_invalid_filter_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid MQTT topic filter"):
        check_filter(bad)


def test_filters_overlap_when_one_topic_matches_both() -> None:
    assert filters_overlap("qx/v1/+/telemetry", "qx/v1/gumi/#")
    assert not filters_overlap("qx/v1/a/telemetry", "qx/v1/b/#")
