"""paho's topic → callback matcher with its answers kept per topic (no garbage cycle per message)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from paho.mqtt.matcher import MQTTMatcher


class CachedMatcher(MQTTMatcher):
    """paho's topic → message-callback matcher, its answer kept per topic.

    paho's ``iter_match`` builds a recursive closure for every message it routes: a reference cycle
    (function ↔ cell) that only the cyclic garbage collector frees. At 1,000 messages a second that was
    seven gen-0 collections a second on the event loop, each ~0.2 ms (bench/latency.py). A plant has a
    bounded set of topics: after the first message on a topic the answer comes from a dict (emptied when
    the callbacks change, or when ``limit`` topics are held), and the first answer walks paho's tree
    without the closure (a plant's 10,000 topics left 40,000 objects of cycles while the agent started).
    Topics with the same callbacks share one answer: 10,000 topics held 10,000 tuples that the collector
    walked at every full collection."""

    def __init__(self, limit: int = 65_536) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.limit = limit
        self._found: dict[str, tuple[Any, ...]] = {}
        self._shared: dict[tuple[int, ...], tuple[Any, ...]] = {}  # the callbacks' ids -> one answer

    def __setitem__(self, key: str, value: Any) -> None:
        self._forget()
        super().__setitem__(key, value)  # type: ignore[no-untyped-call]

    def __delitem__(self, key: str) -> None:
        self._forget()
        super().__delitem__(key)  # type: ignore[no-untyped-call]

    def _forget(self) -> None:
        self._found.clear()
        self._shared.clear()

    def iter_match(self, topic: str) -> Iterator[Any]:
        found = self._found.get(topic)
        if found is None:
            if len(self._found) >= self.limit:
                self._forget()
            answer: list[Any] = []
            _walk(self._root, topic.split("/"), 0, not topic.startswith("$"), answer)
            found = self._found[topic] = self._shared.setdefault(tuple(map(id, answer)), tuple(answer))
        return iter(found)


def _walk(node: Any, parts: list[str], i: int, normal: bool, out: list[Any]) -> None:
    """paho's ``MQTTMatcher.iter_match`` (same tree, same order) as a plain recursive function: what
    ``node`` holds for the topic ``parts[i:]``, appended to ``out``. ``normal``: not a ``$`` topic, which
    wildcards do not match at the first level."""
    children = node._children
    if i == len(parts):
        if node._content is not None:
            out.append(node._content)
    else:
        if (child := children.get(parts[i])) is not None:
            _walk(child, parts, i + 1, normal, out)
        if (child := children.get("+")) is not None and (normal or i > 0):
            _walk(child, parts, i + 1, normal, out)
    if (child := children.get("#")) is not None and (normal or i > 0) and child._content is not None:
        out.append(child._content)
