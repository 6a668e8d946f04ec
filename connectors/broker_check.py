"""The broker-config check: whether a mosquitto.conf fits qxedge's upstream traffic (what qxedge needs
from the broker, and why)."""

from __future__ import annotations

# What qxedge needs from a mosquitto broker carrying its upstream traffic, and why.
BROKER_SETTINGS: dict[str, tuple[int, str]] = {
    "persistence": (1, "sessions and queued QoS 1 messages must survive a broker restart"),
    "max_queued_messages": (
        10_000,
        "a subscriber that lags or is offline loses QoS 1 messages silently beyond this (default 1000)",
    ),
}


def check_mosquitto_conf(text: str) -> list[str]:
    """The problems of a mosquitto.conf for qxedge's upstream traffic (empty when it is fit)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2:
            values[words[0]] = words[1]  # mosquitto: the last occurrence wins
    problems = []
    persistence = values.get("persistence", "false").lower() in ("true", "1", "yes")
    if not persistence:
        problems.append(f"persistence is off: {BROKER_SETTINGS['persistence'][1]}")
    queued = int(values.get("max_queued_messages", "1000"))
    least = BROKER_SETTINGS["max_queued_messages"][0]
    if 0 < queued < least:
        problems.append(
            f"max_queued_messages is {queued}, qxedge needs at least {least}: "
            f"{BROKER_SETTINGS['max_queued_messages'][1]}"
        )
    return problems
