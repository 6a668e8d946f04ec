"""``OpsConfig``: where and how the operations endpoint (:mod:`qxedge.core.ops_server`) listens.

Pydantic only: a config file that has an ``ops`` section loads without ``prometheus_client``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", description="0.0.0.0 to let a Prometheus on another host scrape it")
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")
    max_connections: int = Field(
        64, ge=1, le=10_000, description="connections served at once; one more is answered 503 and closed"
    )
    read_timeout_s: float = Field(
        2.0, gt=0, le=60, description="a client must send its whole request within this, or is closed"
    )
    write_timeout_s: float = Field(
        10.0, gt=0, le=300, description="a client must take its whole answer within this, or is cut"
    )
