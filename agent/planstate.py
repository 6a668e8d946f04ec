"""The plan's state on disk: the orders, the runs done, the last slot executed, the plan and the learnt
base-load profile, so that a restart neither repeats nor loses a run.

One JSON file (``planning.state_path``, default ``$XDG_STATE_HOME/qxedge/plan-<site>.json``) written
atomically: a temporary file beside it, flushed and fsynced, then renamed over the old one, so a crash
leaves the old state or the new one, never half of either. It is written after every slot executed,
every order message applied and every plan adopted. A file that cannot be read is moved aside
(``.corrupt``) and the agent starts afresh with the config's orders, saying so in the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError

from qxedge.agent.orders import Order, OrderBook

log = logging.getLogger(__name__)

VERSION = 1
_ORDERS: TypeAdapter[dict[str, Order]] = TypeAdapter(dict[str, Order])


@dataclass(slots=True)
class PlanState:
    """What the planner must not forget. Slots are named by their start (epoch seconds)."""

    book: OrderBook = field(default_factory=lambda: OrderBook({}, {}, set()))
    done: dict[str, set[int]] = field(default_factory=dict)  # order id -> the slots it ran in
    executed: int | None = None  # the start of the last slot executed
    plan: dict[str, list[int]] = field(default_factory=dict)  # order id -> the slots planned ahead
    profile: dict[int, float] = field(default_factory=dict)  # base load per slot of day (forecast)

    def to_json(self) -> dict[str, Any]:
        book = self.book
        return {
            "v": VERSION,
            "orders": {i: o.model_dump(mode="json") for i, o in book.orders.items()},
            "sources": book.sources,
            "cancelled": sorted(book.cancelled),
            "done": {i: sorted(slots) for i, slots in self.done.items() if slots},
            "executed": self.executed,
            "plan": self.plan,
            "profile": {str(k): v for k, v in self.profile.items()},
        }

    @classmethod
    def from_json(cls, doc: Any) -> PlanState:
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            raise ValueError(f"not a plan state of version {VERSION}")
        orders = _ORDERS.validate_python(doc["orders"])
        sources = {str(k): str(v) for k, v in doc["sources"].items() if k in orders}
        book = OrderBook(orders, sources, {str(i) for i in doc["cancelled"] if i in orders})
        executed = doc["executed"]
        return cls(
            book=book,
            done={str(i): {int(t) for t in slots} for i, slots in doc["done"].items()},
            executed=None if executed is None else int(executed),
            plan={str(i): [int(t) for t in slots] for i, slots in doc["plan"].items()},
            profile={int(k): float(v) for k, v in doc.get("profile", {}).items()},
        )

    def prune(self, before: float, tz: ZoneInfo) -> None:
        """Forget orders (with their runs and plans) due before ``before``."""
        for order_id, order in list(self.book.orders.items()):
            if order.window(tz)[1] < before:
                self.book.orders.pop(order_id)
                self.book.sources.pop(order_id, None)
                self.book.cancelled.discard(order_id)
                self.done.pop(order_id, None)
                self.plan.pop(order_id, None)


def load_state(path: Path) -> PlanState:
    """The state at ``path``: empty when there is none; moved aside (and empty) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return PlanState()
    except OSError as exc:
        log.error("plan state %s cannot be read (%s): starting without it", path, exc.strerror or exc)
        return PlanState()
    try:
        return PlanState.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        aside = path.with_suffix(path.suffix + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        log.error("plan state %s is unreadable (%s): kept as %s, starting afresh", path, exc, aside)
        return PlanState()


def encode(state: PlanState) -> bytes:
    return json.dumps(state.to_json(), separators=(",", ":")).encode()


def save_state(state: PlanState, path: Path) -> None:
    write_atomic(path, encode(state))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
