"""A model file cut into chunks for retained MQTT messages, and put back together (pure).

Chunk ``i`` is the retained payload of ``qx/v1/{site}/models/{name}/chunks/{i}``: ``size`` bytes of the
file (the last one shorter), each under the broker's packet limit (mosquitto's ``message_size_limit``,
a cloud broker's 128 KiB...). The manifest lists every chunk's sha256 and the whole file's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from qxedge.agent.models.manifest import ChunksDoc, FileDoc

DEFAULT_CHUNK_BYTES = 64 * 1024


def cut(data: bytes, size: int = DEFAULT_CHUNK_BYTES) -> tuple[list[bytes], ChunksDoc]:
    if size < 1:
        raise ValueError("the chunk size must be at least one byte")
    parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return parts, ChunksDoc(
        size=size, count=len(parts), sha256=[hashlib.sha256(p).hexdigest() for p in parts]
    )


def assemble(chunks: Mapping[int, bytes], doc: ChunksDoc, file: FileDoc) -> bytes | None:
    """The file, once every chunk held matches its hash and the whole its own; None while a chunk is
    missing or is another version's (a newer publish may still be arriving): the caller waits."""
    parts = []
    for i, digest in enumerate(doc.sha256):
        part = chunks.get(i)
        if part is None or hashlib.sha256(part).hexdigest() != digest:
            return None
        parts.append(part)
    data = b"".join(parts)
    if len(data) != file.bytes or hashlib.sha256(data).hexdigest() != file.sha256:
        return None
    return data


def missing(chunks: Mapping[int, bytes], doc: ChunksDoc) -> int:
    """How many chunks are not (yet) the manifest's."""
    return sum(
        1
        for i, digest in enumerate(doc.sha256)
        if (part := chunks.get(i)) is None or hashlib.sha256(part).hexdigest() != digest
    )
