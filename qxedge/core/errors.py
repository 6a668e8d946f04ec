"""The one exception root of qxedge and its tree.

It lives in ``qxedge.core``, the bottom layer that every other qxedge package imports.

::

    QxError
    ├── ConfigError(ValueError)     invalid configuration; carries every problem with its path
    ├── ConnectorError              a link to the plant or a broker failed
    │   ├── BrokerUnavailable       the MQTT broker refused or could not be reached
    │   └── TransportError          a solver worker's job transport cannot carry jobs (no server, a
    │                               broker feature missing, the start-up probe failed)
    ├── PayloadError(ValueError)    one external payload is invalid (the reason is dead-lettered,
    │                               its ``code`` one of RejectCode: a metric label)
    ├── ModelError                  an ONNX model could not be loaded or does not fit its config
    ├── AuditError                  the audit log cannot be opened (another process holds it)
    ├── MissingExtra                a command needs packages of an extra this install lacks
    ├── ListenError                 an endpoint cannot listen on its configured address (port taken)
    └── LedgerError                 the solver workers' job ledger cannot be reached or written
                                    (defined in qxedge.hybrid.ledger)

Third-party exceptions (paho, onnxruntime, yaml) are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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


class TransportError(ConnectorError):
    """A solver worker's job transport cannot carry jobs: its server is unreachable, a broker feature it
    needs is missing (the message names it), or the start-up probe never came back."""


class RejectCode(StrEnum):
    """Why an external payload was rejected, from a fixed set (a metric label); the message says the rest."""

    OVERSIZE = "oversize"  # over the configured size limit
    BAD_TOPIC = "bad_topic"  # the topic does not fit the configured pattern
    INVALID_UTF8 = "invalid_utf8"  # not UTF-8 text: bad bytes, a byte order mark, a lone surrogate
    INVALID_JSON = "invalid_json"  # not a JSON document (or nested too deeply)
    INVALID_PROTOBUF = "invalid_protobuf"  # not the expected protobuf message (Sparkplug B)
    WRONG_SHAPE = "wrong_shape"  # valid JSON, but not the expected object (keys missing, both forms)
    BAD_NAME = "bad_name"  # a signal name that is empty, too long, or has forbidden characters
    BAD_VALUE = "bad_value"  # a value that is not a finite number or a boolean
    BAD_TS = "bad_ts"  # a timestamp that is not epoch seconds / RFC 3339, or too far ahead
    INVALID = "invalid"  # anything else


class PayloadError(QxError, ValueError):
    """An external payload is invalid; the message is the reason given to the dead letter, ``code`` the
    kind of problem (a fixed set, for metric labels)."""

    def __init__(self, reason: str, code: RejectCode = RejectCode.INVALID) -> None:
        super().__init__(reason)
        self.code = code


class ModelError(QxError):
    """An ONNX model could not be loaded or does not match its configuration."""


class AuditError(QxError):
    """The audit log cannot be opened: another process holds it."""


class MissingExtra(QxError):
    """A command needs packages of an extra that this install lacks (the edge install has no PennyLane,
    SciPy nor the data center's job transports): the message names them and the ``pip install``."""

    def __init__(self, what: str, extra: str, packages: list[str]) -> None:
        self.extra, self.packages = extra, packages
        super().__init__(
            f"{what} needs {', '.join(packages)}, not installed here: pip install 'qxedge[{extra}]'"
        )


class ListenError(QxError):
    """An endpoint of this process cannot listen on its configured address (the port is taken, the
    host is not this machine's): the message names the address and the config keys."""
