"""Production orders: messages validated, the book changed by add / change / cancel, the plan state on
disk across a restart."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from qxedge.agent.clock import SlotGrid
from qxedge.agent.orders import (
    AddOrder,
    CancelOrder,
    ChangeOrder,
    Order,
    OrderBook,
    check_order,
    merge_config,
    parse_message,
)
from qxedge.agent.planstate import PlanState, load_state, save_state
from qxedge.agent.settings import PlanningConfig
from qxedge.core.errors import PayloadError, RejectCode

SEOUL = ZoneInfo("Asia/Seoul")
GRID = SlotGrid(SEOUL, 3600)
NOW = datetime(2026, 6, 1, 6, tzinfo=SEOUL).timestamp()


def order(**kw: object) -> Order:
    doc: dict[str, object] = {
        "id": "po-1",
        "asset": "line1/comp1",
        "runs": 3,
        "release": "2026-06-01T08:00",
        "due": "2026-06-01T18:00",
        "power_kw": 30,
        **kw,
    }
    return Order.model_validate(doc)


def message(op: str, **kw: object) -> bytes:
    return json.dumps({"op": op, **kw}).encode()


def book() -> OrderBook:
    return OrderBook({}, {}, set())


def envelope(asset: str) -> str | None:
    return None if asset.startswith("line1/") else f"no safety envelope for {asset!r}"


def test_a_valid_message_of_each_kind() -> None:
    add = parse_message(message("add", order=order().model_dump(mode="json")))
    assert isinstance(add, AddOrder) and add.order.release == datetime(2026, 6, 1, 8)  # local: no offset
    assert isinstance(parse_message(message("change", order=order().model_dump(mode="json"))), ChangeOrder)
    assert isinstance(parse_message(message("cancel", id="po-1", v=1)), CancelOrder)
    aware = order(release="2026-06-01T08:00:00+09:00")
    assert aware.window(SEOUL)[0] == order().window(SEOUL)[0]


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"{not json", RejectCode.INVALID_JSON, "not a JSON object"),
        (b"[1, 2]", RejectCode.WRONG_SHAPE, "invalid order message"),
        (message("delete", id="po-1"), RejectCode.WRONG_SHAPE, "op"),
        (message("add"), RejectCode.WRONG_SHAPE, "add.order: Field required"),
        (
            message("add", order={**order().model_dump(mode="json"), "runs": 0}),
            RejectCode.WRONG_SHAPE,
            "runs",
        ),
        (
            message("add", order={**order().model_dump(mode="json"), "power_kw": "NaN"}),
            RejectCode.WRONG_SHAPE,
            "power_kw",
        ),
        (
            message("add", order={**order().model_dump(mode="json"), "due": "soon"}),
            RejectCode.WRONG_SHAPE,
            "due",
        ),
        (
            message("add", order={**order().model_dump(mode="json"), "id": "a b"}),
            RejectCode.WRONG_SHAPE,
            "id",
        ),
        (
            message("add", order={**order().model_dump(mode="json"), "extra": 1}),
            RejectCode.WRONG_SHAPE,
            "extra",
        ),
        (message("cancel", id="po-1", v=2), RejectCode.WRONG_SHAPE, "v"),
        (b" " * (64 * 1024 + 1), RejectCode.OVERSIZE, "over the limit"),
    ],
)
def test_bad_messages_say_why(payload: bytes, code: RejectCode, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason) as caught:
        parse_message(payload)
    assert caught.value.code == code


def test_add_change_cancel() -> None:
    b = book()
    assert b.apply(AddOrder(op="add", order=order()), GRID, NOW, envelope) == "added"
    assert b.apply(AddOrder(op="add", order=order()), GRID, NOW, envelope) == "duplicate"  # redelivered
    assert b.sources == {"po-1": "topic"}
    assert b.apply(ChangeOrder(op="change", order=order(runs=5)), GRID, NOW, envelope) == "changed"
    assert b.orders["po-1"].runs == 5
    assert b.apply(CancelOrder(op="cancel", id="po-1"), GRID, NOW, envelope) == "cancelled"
    assert b.live() == [] and b.apply(CancelOrder(op="cancel", id="po-1"), GRID, NOW, envelope) == "duplicate"
    with pytest.raises(PayloadError, match="change: no live order 'po-1'"):
        b.apply(ChangeOrder(op="change", order=order()), GRID, NOW, envelope)


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (AddOrder(op="add", order=order(runs=7)), "add: order 'po-1' exists"),
        (AddOrder(op="add", order=order(id="po-2")), "overlaps order 'po-1' of the same asset"),
        (AddOrder(op="add", order=order(id="po-2", asset="line2/x")), "no safety envelope for 'line2/x'"),
        (AddOrder(op="add", order=order(id="po-2", runs=11)), "11 runs do not fit between release and due"),
        (AddOrder(op="add", order=order(id="po-2", due="2026-06-01T07:00")), "is not after release"),
        (
            AddOrder(op="add", order=order(id="po-2", release="2026-05-01T00:00", due="2026-05-02T00:00")),
            "has passed",
        ),
        (ChangeOrder(op="change", order=order(id="po-9")), "change: no order 'po-9'"),
        (CancelOrder(op="cancel", id="po-9"), "cancel: no order 'po-9'"),
    ],
)
def test_orders_refused_with_a_reason(msg: AddOrder | ChangeOrder | CancelOrder, reason: str) -> None:
    b = book()
    b.apply(AddOrder(op="add", order=order()), GRID, NOW, envelope)
    with pytest.raises(PayloadError, match=reason):
        b.apply(msg, GRID, NOW, envelope)
    assert list(b.orders) == ["po-1"] and b.orders["po-1"] == order()  # nothing changed


def test_an_order_of_the_same_asset_after_another_is_fine() -> None:
    b = book()
    b.apply(AddOrder(op="add", order=order()), GRID, NOW, envelope)
    later = order(id="po-2", release="2026-06-01T18:00", due="2026-06-02T06:00")
    assert b.apply(AddOrder(op="add", order=later), GRID, NOW, envelope) == "added"


def test_whole_slots_count() -> None:
    assert check_order(order(runs=10, release="2026-06-01T08:30"), GRID) == (
        "10 runs do not fit between release and due (9 whole slots)"
    )
    assert check_order(order(runs=9, release="2026-06-01T08:30"), GRID) is None


def test_config_orders_merge_into_the_book() -> None:
    b = book()
    b.apply(AddOrder(op="add", order=order(id="mes-1", asset="line1/oven1")), GRID, NOW, envelope)
    merge_config(b, {"cfg-1": order(id="cfg-1"), "cfg-2": order(id="cfg-2", asset="line1/comp2")})
    b.cancelled.add("cfg-1")
    merge_config(b, {"cfg-1": order(id="cfg-1")})  # the same again: still cancelled; cfg-2 was removed
    assert set(b.orders) == {"mes-1", "cfg-1"} and b.cancelled == {"cfg-1"}
    merge_config(b, {"cfg-1": order(id="cfg-1", runs=2)})  # edited in the config: it is live again
    assert b.orders["cfg-1"].runs == 2 and not b.cancelled


def test_config_orders_are_checked_with_the_clock() -> None:
    doc = {"cap_kw": 100, "timezone": "Asia/Seoul"}
    with pytest.raises(ValueError, match=r"orders\[1\] \(b\): overlaps order 'a'"):
        PlanningConfig.model_validate({**doc, "orders": [order(id="a"), order(id="b")]})
    with pytest.raises(ValueError, match="order ids must be unique"):
        PlanningConfig.model_validate({**doc, "orders": [order(id="a"), order(id="a", asset="line1/x")]})
    with pytest.raises(ValueError, match="do not fit"):
        PlanningConfig.model_validate({**doc, "orders": [order(runs=11)]})


def test_plan_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "plan-demo.json"
    state = PlanState()
    state.book.apply(AddOrder(op="add", order=order()), GRID, NOW, envelope)
    state.book.apply(AddOrder(op="add", order=order(id="po-2", asset="line1/x")), GRID, NOW, envelope)
    state.book.apply(CancelOrder(op="cancel", id="po-2"), GRID, NOW, envelope)
    state.done["po-1"] = {100, 200}
    state.plan["po-1"] = [300]
    state.executed = 200
    state.profile[8] = 61.5
    save_state(state, path)
    assert [p.name for p in path.parent.iterdir()] == ["plan-demo.json"]  # no temporary file left
    again = load_state(path)
    assert again.book == state.book and again.done == state.done and again.plan == state.plan
    assert again.executed == 200 and again.profile == {8: 61.5}
    assert again.book.orders["po-1"].release == datetime(2026, 6, 1, 8)


def test_an_unreadable_state_is_kept_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "plan.json"
    assert load_state(path) == PlanState()  # none yet: empty
    path.write_text('{"v": 1, "orders": {"x": {"id": 3}}')
    assert load_state(path) == PlanState()
    assert (tmp_path / "plan.json.corrupt").exists() and not path.exists()
    assert "unreadable" in caplog.text


def test_pruning_forgets_orders_long_due() -> None:
    state = PlanState()
    state.book.apply(AddOrder(op="add", order=order()), GRID, NOW, envelope)
    state.done["po-1"] = {1}
    state.prune(datetime(2026, 6, 1, 17, tzinfo=SEOUL).timestamp(), SEOUL)
    assert "po-1" in state.book.orders
    state.prune(datetime(2026, 6, 1, 19, tzinfo=SEOUL).timestamp(), SEOUL)
    assert not state.book.orders and not state.done
