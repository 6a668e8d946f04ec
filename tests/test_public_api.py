"""Each package's curated API: every name of ``__all__`` resolves, nothing else is offered from the
package, and the lazy packages load a module only when one of its names is asked for."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["qxedge.agent", "qxedge.agent.features", "qxedge.hybrid", "qxedge.hybrid.problems"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    for public in package.__all__:
        assert getattr(package, public) is not None, public
    home = getattr(package, "_HOME", None)
    if home is not None:  # the lazy ones: __all__ spells out exactly what _HOME maps
        assert sorted(package.__all__) == sorted(home)


@pytest.mark.parametrize("name", ["qxedge.agent", "qxedge.hybrid"])
def test_a_name_outside_the_api_is_an_import_error(name: str) -> None:
    with pytest.raises(ImportError, match="cannot import name 'nothing_here'"):
        exec(f"from {name} import nothing_here")


def test_loading_a_config_loads_no_runtime() -> None:
    """``qxedge.agent``'s API is lazy: the config module alone pulls in neither the pipeline nor the
    data-center service (nor their drivers)."""
    probe = (
        "import sys, qxedge.agent.config, qxedge.hybrid.wire;"
        "print(sorted(m for m in ('qxedge.agent.pipeline', 'qxedge.hybrid.service', 'onnxruntime')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
