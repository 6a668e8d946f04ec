"""The audit log's hash chain, pure: how a row's hash is made, and the check ``qxedge audit verify`` runs.

Each row carries ``prev_hash`` (the hash of the row before it, ``GENESIS`` for the first row of a log) and
``hash = H(prev_hash || canonical bytes of the row)``: H is SHA-256, or HMAC-SHA256 with the site's key
when one is configured; the canonical bytes are the compact JSON array of the row's columns from ``id`` to
``count``. A changed, deleted or inserted row breaks the chain at that row; rows cut from the end (and
a log re-chained by someone who can compute H) show only against a checkpoint, an ``(id, hash)`` pair
published upstream (docs/audit.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from qxedge.core.errors import AuditError

GENESIS = "0" * 64  # prev_hash of a log's first row
MIN_KEY_BYTES = 16
MAX_PROBLEMS = 20  # listed in a report; the first broken row is always among them


def digest(key: bytes | None, prev_hash: str, content: Iterable[Any]) -> str:
    """The hash of a row: ``content`` its columns from ``id`` to ``count``, in order."""
    data = prev_hash.encode() + orjson.dumps(list(content))
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.digest(key, data, "sha256").hex()


def chain_name(key: bytes | None) -> str:
    """How a log's rows are hashed, as its meta table records it: ``sha256`` or ``hmac-sha256:<key id>``
    (the key id is an HMAC of a fixed text: it tells keys apart and reveals nothing of the key)."""
    if key is None:
        return "sha256"
    return "hmac-sha256:" + hmac.digest(key, b"qxedge audit key id", "sha256").hex()[:16]


def read_key(path: Path) -> bytes:
    """The site's HMAC key: the bytes of ``path`` (surrounding whitespace stripped)."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise AuditError(f"audit key file {path}: {exc.strerror or exc}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise AuditError(f"audit key file {path}: {len(key)} bytes, at least {MIN_KEY_BYTES} needed")
    return key


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A row's id and hash, recorded locally and published upstream."""

    id: int
    hash: str
    source: str  # "local" or the file it came from


def parse_checkpoints(text: str, source: str) -> list[Checkpoint]:
    """Checkpoints from JSON lines (or one JSON array): telemetry records as they arrived upstream
    (``{"audit_checkpoint": {"id": ..., "hash": ...}, ...}``) or bare ``{"id": ..., "hash": ...}``;
    telemetry records without a checkpoint are skipped."""
    stripped = text.strip()
    try:
        docs = orjson.loads(stripped) if stripped.startswith("[") else None
    except orjson.JSONDecodeError as exc:
        raise AuditError(f"{source}: not a JSON array: {exc}") from None
    if docs is None:
        docs = []
        for n, line in enumerate(stripped.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise AuditError(f"{source}:{n}: not JSON: {exc}") from None
    found = []
    for n, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or ("asset" in doc and "audit_checkpoint" not in doc):
            continue  # another telemetry record
        point = doc.get("audit_checkpoint", doc)
        ident, hashed = (point.get("id"), point.get("hash")) if isinstance(point, dict) else (None, None)
        if isinstance(ident, bool) or not isinstance(ident, int) or not isinstance(hashed, str):
            raise AuditError(f"{source}: entry {n}: expected an id (integer) and a hash (text)")
        found.append(Checkpoint(ident, hashed, source))
    return found


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where the retained rows begin: the id and hash of the last row retention deleted."""

    upto_id: int
    upto_hash: str


@dataclass(slots=True)
class Verification:
    """What ``qxedge audit verify`` reports."""

    path: str
    chain: str
    rows: int = 0
    first_id: int | None = None
    last_id: int | None = None
    anchor: Anchor | None = None
    checkpoints: int = 0  # checked against a row (or the retention anchor)
    unchecked: int = 0  # naming rows retention deleted: nothing left to compare them with
    unused_ids: int = 0  # ids a failed write took (the chain skips them intact)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (row id, what is wrong)
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_broken(self) -> tuple[int, str] | None:
        return min(self.problems, default=None)

    def problem(self, row_id: int, what: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((row_id, what))
        else:
            self.more_problems += 1

    def as_dict(self) -> dict[str, Any]:
        broken = self.first_broken
        return {
            "path": self.path,
            "ok": self.ok,
            "chain": self.chain,
            "rows": self.rows,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "retention_anchor": None
            if self.anchor is None
            else {"upto_id": self.anchor.upto_id, "upto_hash": self.anchor.upto_hash},
            "checkpoints_checked": self.checkpoints,
            "checkpoints_pruned": self.unchecked,
            "unused_ids": self.unused_ids,
            "first_broken": None if broken is None else {"id": broken[0], "problem": broken[1]},
            "problems": [{"id": i, "problem": p} for i, p in sorted(self.problems)],
            "more_problems": self.more_problems,
        }

    def lines(self) -> list[str]:
        if self.ok:
            span = "no rows" if self.first_id is None else f"rows {self.first_id}..{self.last_id}"
            kept = "" if self.anchor is None else f", retention kept rows after {self.anchor.upto_id}"
            out = [
                f"{self.path}: intact: {span} ({self.rows} rows, {self.chain}{kept}), "
                f"{self.checkpoints} checkpoint(s) matched"
            ]
        else:
            broken = self.first_broken
            assert broken is not None
            out = [f"{self.path}: BROKEN at row {broken[0]}: {broken[1]}"]
            out += [f"  row {i}: {p}" for i, p in sorted(self.problems) if (i, p) != broken]
            if self.more_problems:
                out.append(f"  ... and {self.more_problems} more problem(s)")
        if self.unchecked:
            out.append(f"  {self.unchecked} checkpoint(s) name rows retention deleted: not checked")
        return out


def check(
    rows: Iterable[Mapping[str, Any]],
    hashed: Iterable[str],
    key: bytes | None,
    anchor: Anchor | None,
    checkpoints: Iterable[Checkpoint],
    report: Verification,
) -> Verification:
    """Walk ``rows`` (in id order, as dicts) along the chain; ``hashed``: the columns hashed, in order.
    Checks each row's hash, its link to the row before (or to the retention anchor, or GENESIS), every
    checkpoint, and that the chain confirms the retention anchor it starts from."""
    columns = list(hashed)
    points: dict[int, list[Checkpoint]] = {}
    for point in checkpoints:
        points.setdefault(point.id, []).append(point)
    report.anchor = anchor
    prev_id, prev_hash = (0, GENESIS) if anchor is None else (anchor.upto_id, anchor.upto_hash)
    for row in rows:
        ident = row["id"]
        report.rows += 1
        report.first_id = ident if report.first_id is None else report.first_id
        report.last_id = ident
        stored, link = row["hash"], row["prev_hash"]
        if not isinstance(stored, str) or not isinstance(link, str):
            report.problem(ident, "the row has no hash: it was not written by the agent")
        elif digest(key, link, (row[c] for c in columns)) != stored:
            report.problem(ident, "the row does not match its hash: changed after it was written, or forged")
        if isinstance(link, str) and link != prev_hash:
            if ident > prev_id + 1:
                report.problem(
                    ident, f"rows {prev_id + 1}..{ident - 1} are missing (deleted): the chain skips them"
                )
            else:
                report.problem(
                    ident, f"prev_hash is not the hash of row {prev_id}: a row forged or re-chained"
                )
        elif ident > prev_id + 1:
            report.unused_ids += ident - prev_id - 1
        if row["kind"] == "retention" and anchor is not None:
            said = _anchor_of(row)
            if said is not None and said.upto_id == anchor.upto_id and said != anchor:
                report.problem(ident, "the retention anchor differs from the one this row recorded")
        for point in points.pop(ident, ()):
            report.checkpoints += 1
            if point.hash != stored:
                report.problem(ident, f"hash differs from the checkpoint ({point.source}): log rewritten")
        prev_id, prev_hash = ident, stored if isinstance(stored, str) else ""
    for ident, named in sorted(points.items()):
        for point in named:
            if anchor is not None and ident == anchor.upto_id:
                report.checkpoints += 1
                if point.hash != anchor.upto_hash:
                    report.problem(
                        ident, f"the retention anchor differs from the checkpoint ({point.source})"
                    )
            elif ident > prev_id:
                report.checkpoints += 1
                report.problem(
                    ident,
                    f"the log ends at row {prev_id} but a checkpoint ({point.source}) names row {ident}: "
                    "rows cut from the end",
                )
            elif anchor is not None and ident < anchor.upto_id:
                report.unchecked += 1
            else:
                report.checkpoints += 1
                report.problem(ident, f"row named by a checkpoint ({point.source}) is missing")
    return report


def _anchor_of(row: Mapping[str, Any]) -> Anchor | None:
    try:
        doc = orjson.loads(row["provenance"])
        return Anchor(int(doc["upto_id"]), str(doc["upto_hash"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
