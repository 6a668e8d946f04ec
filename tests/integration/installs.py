"""Installs of qxedge made from the test environment's own packages, without a network: a fresh venv whose
site-packages holds links to exactly the distributions ``pip install qxedge[EXTRAS]`` would install
(qxedge's requirements for those extras, and theirs, resolved from the installed metadata), nothing else.
What the data center's extra brings (PennyLane, SciPy, nats-py, aio-pika) is then not importable at all,
its metadata and entry points included, as on an edge box.
"""

from __future__ import annotations

import site
import subprocess
import sys
from importlib.metadata import Distribution, PackageNotFoundError
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
SITE = site.getsitepackages()  # this environment's, not a checkout's qxedge.egg-info in the working folder


def distribution(name: str) -> Distribution:
    """The distribution ``name`` installed in this environment's site-packages."""
    for dist in Distribution.discover(name=name, path=SITE):
        return dist
    raise PackageNotFoundError(name)


def closure(extras: tuple[str, ...] = ()) -> set[str]:
    """The canonical names of the distributions ``pip install qxedge[extras]`` installs (qxedge too)."""
    found: set[str] = set()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("qxedge", extras)]
    while todo:
        name, wanted = todo.pop()
        dist = distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        found.add(key)
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": extra} for extra in ("", *wanted)]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if canonicalize_name(req.name) == key:  # qxedge[datacenter] inside qxedge's own extras
                todo.append((name, tuple(req.extras)))
                continue
            try:
                distribution(req.name)
            except PackageNotFoundError:  # a requirement of another platform or Python
                continue
            todo.append((req.name, tuple(req.extras)))
    return found


def make_venv(root: Path, dists: set[str]) -> Path:
    """A venv at ``root`` (no pip) whose site-packages links each top-level file and folder of ``dists``
    from this environment; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = root / "lib" / version / "site-packages"
    for name in dists:
        dist = distribution(name)
        for file in dist.files or []:
            top = file.parts[0]
            if top == ".." or "__pycache__" in file.parts:  # scripts in bin/: not needed
                continue
            source = Path(str(dist.locate_file(top)))
            link = site / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return root / "bin" / "python"


def install_wheel(python: Path, wheel: Path) -> None:
    """``pip install --no-deps`` of ``wheel`` into the venv of ``python`` (by this environment's pip)."""
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
