"""Production orders: the model, the messages on ``qx/v1/{site}/orders`` and the book they change.

An order says that an on/off load (``asset``) must run ``runs`` slots of the plant's clock between its
``release`` and its ``due`` (local wall-clock times, ISO 8601; without an offset they are the site's
local time). A slot counts when it lies wholly in ``[release, due)``. Orders of the same asset must not
overlap in time (one load runs one order at a time).

Messages (JSON, at most 64 KiB; schema version ``v`` 1, optional)::

    {"op": "add", "order": {"id": "po-4711", "asset": "line1/comp1", "runs": 3,
                            "release": "2026-06-01T08:00", "due": "2026-06-01T18:00", "power_kw": 30}}
    {"op": "change", "order": {... the whole order, same id ...}}
    {"op": "cancel", "id": "po-4711"}

An ``add`` of an order that exists with the same content is a duplicate delivery and changes nothing;
with other content it is refused (use ``change``). What is refused is dead-lettered with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from qxedge.agent.clock import SlotGrid
from qxedge.core.errors import PayloadError, RejectCode

MAX_ORDER_BYTES = 64 * 1024
MAX_RUNS = 1000


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the order's id (add, change, cancel)")
    asset: str = Field(
        pattern=r"^[A-Za-z0-9_./-]+$", max_length=128, description="the on/off load, e.g. line1/comp1"
    )
    runs: int = Field(ge=1, le=MAX_RUNS, description="slots it must run in")
    release: datetime = Field(description="first local time it may run (ISO 8601; no offset: site time)")
    due: datetime = Field(description="it must be done by this local time")
    power_kw: float = Field(
        gt=0, le=100_000, allow_inf_nan=False, description="nameplate power; the measured one replaces it"
    )

    def window(self, tz: ZoneInfo) -> tuple[float, float]:
        """(release, due) as epoch seconds; a time without an offset is the site's local time."""
        return _epoch(self.release, tz), _epoch(self.due, tz)


def _epoch(moment: datetime, tz: ZoneInfo) -> float:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)).timestamp()


def check_order(order: Order, grid: SlotGrid) -> str | None:
    """Why ``order`` cannot be planned on ``grid`` (its window, its runs), or None."""
    release, due = order.window(grid.tz)
    if due <= release:
        return f"due {order.due.isoformat()} is not after release {order.release.isoformat()}"
    if due - release > 366 * 86_400:
        return "the window from release to due is longer than a year"
    fit = len(grid.between(release, due, limit=order.runs))
    if fit < order.runs:
        return f"{order.runs} runs do not fit between release and due ({fit} whole slots)"
    return None


class AddOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    op: Literal["add"]
    order: Order


class ChangeOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    op: Literal["change"]
    order: Order


class CancelOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    op: Literal["cancel"]
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")


OrderMessage = Annotated[AddOrder | ChangeOrder | CancelOrder, Field(discriminator="op")]
_MESSAGE: TypeAdapter[AddOrder | ChangeOrder | CancelOrder] = TypeAdapter(OrderMessage)


def parse_message(payload: bytes) -> AddOrder | ChangeOrder | CancelOrder:
    """The message in ``payload``; PayloadError with the reason (for the dead letter) when invalid."""
    if len(payload) > MAX_ORDER_BYTES:
        raise PayloadError(f"{len(payload)} bytes, over the limit of {MAX_ORDER_BYTES}", RejectCode.OVERSIZE)
    try:
        return _MESSAGE.validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("json_invalid", "json_type"):
            raise PayloadError(f"not a JSON object: {first['msg']}", RejectCode.INVALID_JSON) from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise PayloadError(f"invalid order message: {problems}", RejectCode.WRONG_SHAPE) from None


@dataclass(slots=True)
class OrderBook:
    """The orders the planner knows, by id, with where each came from (``config`` or ``topic``)."""

    orders: dict[str, Order]
    sources: dict[str, str]
    cancelled: set[str]

    def live(self) -> list[Order]:
        return [o for i, o in self.orders.items() if i not in self.cancelled]

    def apply(
        self,
        message: AddOrder | ChangeOrder | CancelOrder,
        grid: SlotGrid,
        now: float,
        allowed: Callable[[str], str | None],
    ) -> str:
        """Apply ``message``; returns what happened (``added``, ``changed``, ``cancelled``, ``duplicate``),
        raises PayloadError with the reason when it is refused. ``allowed(asset)`` says why an asset
        cannot be planned (no safety envelope), or None."""
        if isinstance(message, CancelOrder):
            if message.id not in self.orders:
                raise PayloadError(f"cancel: no order {message.id!r}")
            if message.id in self.cancelled:
                return "duplicate"
            self.cancelled.add(message.id)
            return "cancelled"
        order = message.order
        known = self.orders.get(order.id)
        if isinstance(message, AddOrder):
            if known is not None:
                if known == order and order.id not in self.cancelled:
                    return "duplicate"
                raise PayloadError(f"add: order {order.id!r} exists (change it, or use a new id)")
        elif known is None or order.id in self.cancelled:
            raise PayloadError(f"change: no {'live ' if known else ''}order {order.id!r}")
        problem = check_order(order, grid) or allowed(order.asset)
        if problem is None and order.window(grid.tz)[1] <= now:
            problem = f"due {order.due.isoformat()} has passed"
        if problem is None:
            problem = overlap(order, self.live(), grid.tz)
        if problem is not None:
            raise PayloadError(f"{message.op} {order.id!r}: {problem}")
        self.orders[order.id] = order
        self.sources[order.id] = "topic"
        return "added" if known is None else "changed"


def overlap(order: Order, others: list[Order], tz: ZoneInfo) -> str | None:
    """Why ``order`` overlaps another order of the same asset in time, or None."""
    lo, hi = order.window(tz)
    for other in others:
        if other.id != order.id and other.asset == order.asset:
            a, b = other.window(tz)
            if lo < b and a < hi:
                return f"overlaps order {other.id!r} of the same asset ({other.asset})"
    return None


def merge_config(book: OrderBook, configured: Mapping[str, Order]) -> None:
    """The config's orders into ``book``: new or edited ones replace what the book holds; orders that
    came from the config and are no longer in it are dropped."""
    for order_id in [i for i, src in book.sources.items() if src == "config" and i not in configured]:
        book.orders.pop(order_id, None)
        book.sources.pop(order_id, None)
        book.cancelled.discard(order_id)
    for order_id, order in configured.items():
        if book.orders.get(order_id) != order or book.sources.get(order_id) != "config":
            book.orders[order_id] = order
            book.sources[order_id] = "config"
            book.cancelled.discard(order_id)
