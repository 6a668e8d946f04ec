"""Which client ids `qxedge rabbitmq-auth` lets a user log in with (hybrid/clientid_auth.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from qxedge.core.errors import ListenError
from qxedge.hybrid.clientid_auth import ClientIdPolicy, serve


def test_a_site_logs_in_with_its_own_client_ids_only() -> None:
    policy = ClientIdPolicy(trusted=frozenset({"solver"}))
    for own in ("qxedge-uplink-osan", "qxedge-uplink-osan-0123abcd", "qxedge-check-osan-89abcdef"):
        assert policy.allows("osan", own), own
    for other in (
        "qxedge-uplink-gumi",  # another site's
        "qxedge-uplink-b-osan",  # site b-osan's, not osan's: a role has no dash
        "qxedge-uplink-osan-x",
        "qxedge-uplink-osan-0123ABCD",
        "osan",
        "qxedge-uplink-os.n",
    ):
        assert not policy.allows("osan", other), other
    assert policy.allows("b-osan", "qxedge-uplink-b-osan")
    assert not policy.allows("o.an", "qxedge-uplink-osan")  # the username is matched literally
    # a user named like another's id with a session suffix would share that user's ids: refused
    assert not policy.allows("osan-0123abcd", "qxedge-uplink-osan-0123abcd")


async def test_a_taken_port_is_a_listen_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve(ClientIdPolicy(), "127.0.0.1", port, asyncio.Event())


def test_workers_and_logins_without_a_client_id_are_let_through() -> None:
    policy = ClientIdPolicy(trusted=frozenset({"solver"}))
    assert policy.allows("solver", "anything-at-all")
    assert policy.allows("gumi", None)  # AMQP: RabbitMQ's internal permissions decide


def test_a_pattern_of_ones_own() -> None:
    assert ClientIdPolicy(client_id="{user}").allows("gumi", "gumi")
    assert not ClientIdPolicy(client_id="{user}").allows("gumi", "gumi-2")
    with pytest.raises(ValueError, match="does not contain"):
        ClientIdPolicy(client_id="qxedge-.*")
    with pytest.raises(ValueError, match="client id pattern"):
        ClientIdPolicy(client_id="({user}")
