"""Asset patterns as configs write them (``assets: ["line1/*", "fan?"]``): fnmatch, case-sensitive."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Collection, Sequence

WILDCARD = re.compile(r"[*?[]")  # a pattern without these names one asset


def matching(names: Collection[str], patterns: Sequence[str]) -> list[str]:
    """The names any pattern matches, sorted. Patterns without a wildcard are looked up instead of
    matched against every name (a plant of thousands of assets)."""
    if not any(WILDCARD.search(p) for p in patterns):
        return sorted({p for p in patterns if p in names})
    return sorted(filter(_regex(tuple(patterns)).match, names))


def names(patterns: Sequence[str], name: str) -> bool:
    """Whether any of ``patterns`` matches ``name`` (one compiled expression per pattern list, kept)."""
    return _regex(tuple(patterns)).match(name) is not None


class AssetFilter:
    """Whether any of ``patterns`` names an asset; the answer is kept per asset (asked at every
    evaluation)."""

    __slots__ = ("_answers", "_regex")

    def __init__(self, patterns: Sequence[str]) -> None:
        self._regex = _regex(tuple(patterns))
        self._answers: dict[str, bool] = {}

    def __call__(self, asset: str) -> bool:
        answer = self._answers.get(asset)
        if answer is None:
            answer = self._answers[asset] = self._regex.match(asset) is not None
        return answer


@functools.lru_cache(maxsize=256)
def _regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for fnmatch patterns (~10x fnmatchcase per pattern and name); none: never."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")
