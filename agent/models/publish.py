"""``qxedge models publish`` and the operator commands: the data-center side of model deployment.

Publishing a model folder (``qxedge train``'s output) signs its manifest and sends, retained at QoS 1:

1. the chunks, ``qx/v1/{site}/models/{name}/chunks/{i}`` (``i`` from 0), each under the packet limit;
2. then the signed manifest, ``qx/v1/{site}/models/{name}`` (listing every chunk's sha256).

The command returns once the broker has acknowledged every message. Chunk topics past the new count (a
bigger model published before) are cleared, so the broker keeps exactly one model per name.
Commands (``approve``, ``reject``, ``rollback``) go to ``qx/v1/{site}/models/{name}/command``, not retained.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from qxedge.agent.models.chunks import DEFAULT_CHUNK_BYTES, cut
from qxedge.agent.models.signing import load_private_key, sign
from qxedge.agent.models.training import read_model_dir
from qxedge.connectors.mqtt import BrokerConfig, MqttClient, site_topic
from qxedge.core.errors import BrokerUnavailable, ModelError

ACTIONS = ("approve", "reject", "rollback")
ACK_TIMEOUT_S = 60.0


def model_topic(site: str, name: str, suffix: str = "") -> str:
    return site_topic(site, f"models/{name}" + (f"/{suffix}" if suffix else ""))


async def _send_all(broker: BrokerConfig, messages: list[tuple[str, bytes, bool]]) -> None:
    """Publish (topic, payload, retain) at QoS 1 in order; return once the broker acknowledged all."""
    pending: set[int] = set()
    done = asyncio.Event()

    def acked(mid: int) -> None:
        pending.discard(mid)
        if not pending:
            done.set()

    async with MqttClient(broker, role="models-publish") as client:
        client.ack_listener = acked
        for topic, payload, retain in messages:
            mid = client.publish_tracked(topic, payload, retain=retain)
            if mid is None:
                raise BrokerUnavailable(f"lost the broker at {broker.url} while publishing {topic}")
            pending.add(mid)
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                if pending:
                    await done.wait()
        except TimeoutError:
            raise BrokerUnavailable(
                f"the broker at {broker.url} acknowledged {len(messages) - len(pending)} of "
                f"{len(messages)} messages in {ACK_TIMEOUT_S:g} s"
            ) from None


async def publish_model(
    folder: Path,
    key_path: Path,
    site: str,
    name: str,
    broker: BrokerConfig,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    clear_up_to: int = 0,
    progress: Callable[[str], None] = print,
) -> dict[str, object]:
    """Sign and publish ``folder``'s model as ``name`` for ``site``; a summary of what was sent.
    ``clear_up_to``: chunk indexes below it and past the new count are cleared (empty retained)."""
    manifest, data = read_model_dir(folder)
    key = load_private_key(key_path)
    parts, chunks = cut(data, chunk_bytes)
    manifest = manifest.model_copy(update={"name": name, "chunks": chunks})
    signed = sign(manifest, key)
    messages = [(model_topic(site, name, f"chunks/{i}"), part, True) for i, part in enumerate(parts)]
    messages += [(model_topic(site, name, f"chunks/{i}"), b"", True) for i in range(len(parts), clear_up_to)]
    messages.append((model_topic(site, name), signed.payload(), True))
    await _send_all(broker, messages)
    progress(
        f"published {name} ({manifest.model.bytes} bytes, sha256 {manifest.model.sha256[:12]}) for site "
        f"{site}: {chunks.count} chunk(s) of {chunk_bytes} bytes at most, key {signed.key_id}"
    )
    return {
        "topic": model_topic(site, name),
        "sha256": manifest.model.sha256,
        "bytes": manifest.model.bytes,
        "chunks": chunks.count,
        "key_id": signed.key_id,
    }


async def send_command(
    site: str, name: str, action: str, broker: BrokerConfig, sha256: str | None = None, by: str | None = None
) -> None:
    if action not in ACTIONS:
        raise ModelError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    doc: dict[str, object] = {"action": action, "ts": time.time()}
    if sha256 is not None:
        doc["sha256"] = sha256
    if by is not None:
        doc["by"] = by
    await _send_all(broker, [(model_topic(site, name, "command"), json.dumps(doc).encode(), False)])
