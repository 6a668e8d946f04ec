"""``AgentOpsConfig``: the agent's ``ops:`` section, the endpoint's settings
(:class:`~qxedge.core.ops_config.OpsConfig`) and its console's.

Pydantic only: loading a config imports no web library.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from qxedge.core.config import read_secret, resolve_path
from qxedge.core.ops_config import OpsConfig

MIN_TOKEN_CHARS = 16  # a token an operator could guess in a day of tries is no lock


class AgentOpsConfig(OpsConfig):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    console: bool = Field(True, description="serve the web console at / and the snapshot at /status")
    console_token: SecretStr | None = Field(
        None,
        description="lets the console lock and unlock assets (Authorization: Bearer <token>); none: "
        "read-only. From QXEDGE_OPS__CONSOLE_TOKEN or console_token_file rather than the file itself",
    )
    console_token_file: Path | None = Field(None, description="a file holding the console token (first line)")
    max_streams: int = Field(
        8, ge=0, description="live-update streams (browser tabs) at once; below max_connections"
    )
    history_s: float = Field(
        120.0, gt=0, le=3600, description="how far back the console's plots reach (per asset, in memory)"
    )

    @field_validator("console_token_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @model_validator(mode="after")
    def _token(self) -> AgentOpsConfig:
        if self.console_token_file is not None:
            if self.console_token is not None:
                raise ValueError("give console_token or console_token_file, not both")
            self.console_token = read_secret(self.console_token_file)
        if self.console_token is not None and len(self.console_token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"console_token: at least {MIN_TOKEN_CHARS} characters")
        if self.max_streams >= self.max_connections:
            raise ValueError("max_streams must stay below max_connections (health checks need a slot)")
        return self
