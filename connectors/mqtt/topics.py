"""MQTT topics: qxedge's namespace (``site_topic``) and topic filters (validity, matching, overlap).
Pure (paho's topic tree, not its client)."""

from __future__ import annotations

from paho.mqtt.matcher import MQTTMatcher

NAMESPACE = "qx/v1"  # every topic of a site: qx/v1/{site}/... (docs/connectors/mqtt.md)


def site_topic(site: str, suffix: str) -> str:
    """The topic ``suffix`` of ``site`` in qxedge's namespace: ``qx/v1/{site}/{suffix}`` (``telemetry``,
    ``deadletter``, ``setpoints/line1/pump1``, ``jobs``, ...)."""
    return f"{NAMESPACE}/{site}/{suffix}"


def check_filter(topic_filter: str) -> str:
    """``topic_filter`` when it is a valid MQTT topic filter; ValueError otherwise."""
    levels = topic_filter.split("/")
    if not topic_filter or any(
        ("#" in lv and (lv != "#" or i != len(levels) - 1)) or ("+" in lv and lv != "+")
        for i, lv in enumerate(levels)
    ):
        raise ValueError(f"invalid MQTT topic filter {topic_filter!r}")
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (paho's ``topic_matches_sub``, without its client)."""
    matcher = MQTTMatcher()  # type: ignore[no-untyped-call]
    matcher[topic_filter] = True
    return next(iter(matcher.iter_match(topic)), None) is not None  # type: ignore[no-untyped-call]


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT topic filters (``#`` also matches its parent level)."""
    la, lb = a.split("/"), b.split("/")
    for x, y in zip(la, lb, strict=False):
        if x == "#" or y == "#":
            return True
        if x != y and "+" not in (x, y):
            return False
    longer, shorter = (la, lb) if len(la) > len(lb) else (lb, la)
    return len(la) == len(lb) or (len(longer) == len(shorter) + 1 and longer[-1] == "#")
