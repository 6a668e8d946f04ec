"""Names a package exports without importing their module until first use (PEP 562).

A connector package (``qxedge.connectors.mqtt``) exports its config models, which import no driver, and
its runtime (``MqttClient``), which imports paho: loading a config file must not pay for the runtime.
The package lists the runtime names under ``TYPE_CHECKING`` (for type checkers) and in
``__getattr__ = lazy_exports(__name__, {...})``; ``from qxedge.connectors.mqtt import MqttClient`` then
imports the runtime module at that moment, once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from the module ``where[name]`` (relative to
    ``package``, e.g. ``"._client"``) on first access and keeps it in the package's namespace."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
