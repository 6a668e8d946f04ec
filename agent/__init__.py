"""The qxedge edge agent: config, pipeline, features, inference, decisions and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qxedge")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"
