"""The one exception root of qxedge and its tree.

It lives in ``qxedge.core``, the bottom layer that every other qxedge package imports.

::

    QxError
    ├── ConfigError(ValueError)     invalid configuration; carries every problem with its path
    ├── ConnectorError              a link to the plant or a broker failed
    │   └── BrokerUnavailable       the MQTT broker refused or could not be reached
    ├── PayloadError(ValueError)    one external payload is invalid (the reason is dead-lettered)
    ├── ModelError                  an ONNX model could not be loaded or does not fit its config
    └── AuditError                  the audit log cannot be opened (another process holds it)

Third-party exceptions (paho, onnxruntime, yaml) are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from dataclasses import dataclass


class QxError(Exception):
    """Root of every error qxedge raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem: where (``models[0].path``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(QxError, ValueError):
    """The configuration is invalid; ``problems`` lists every problem found, each with its path."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{where}{len(problems)} problem(s)\n{lines}")


class ConnectorError(QxError):
    """A link to the plant or to a broker failed."""


class BrokerUnavailable(ConnectorError):
    """The MQTT broker could not be reached or (``refused``) refused the connection."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class PayloadError(QxError, ValueError):
    """An external payload is invalid; the message is the reason given to the dead letter."""


class ModelError(QxError):
    """An ONNX model could not be loaded or does not match its configuration."""


class AuditError(QxError):
    """The audit log cannot be opened: another process holds it."""
