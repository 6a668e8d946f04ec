"""Constrained jobs on the wire: dimod's own ``ConstrainedQuadraticModel.to_file()`` bytes, checked.

A ``cqm`` job's ``problem`` is::

    {"type": "ConstrainedQuadraticModel", "encoding": "base64", "data": "<to_file() bytes, base64>"}

(:func:`encode_cqm`). The bytes are dimod's CQM file format 2.0: a header (``DIMODCQM``, the version,
a JSON dict of counts), then a zip archive with ``varinfo``, ``objective``, ``variable_labels.json`` and
a ``constraints/<label>/`` folder of ``lhs``, ``rhs``, ``sense`` per constraint; each expression a
``DIMODEXPR`` header and its ``INDX``, ``OFFS``, ``LINB`` and ``QUAD`` sections.

dimod's own reader hands these sections straight to native code that trusts them ("it's possible to get
segfaults", says its source), so :func:`read_cqm` never calls it: it reads the archive itself, every
member with a byte limit (a zip bomb stops at :attr:`JobLimits.max_unpacked_bytes`), checks every count,
index, bound and bias in NumPy, and only then builds the model through dimod's public, checked API. Any
bad input raises :class:`~qxedge.hybrid.wire.JobRejected` with a reason, never another exception.

Accepted: binary and integer variables (finite, integral bounds), linear and quadratic objective and
constraints, ``==``, ``<=`` and ``>=``. Refused with a reason: spin and real variables, soft
(weighted) constraints, a file of another version than 2.0.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import dimod
import numpy as np
import numpy.typing as npt

from qxedge.hybrid.wire import JobLimits, JobRejected, _label, _labels, model_bytes

CQM_TYPE = "ConstrainedQuadraticModel"
CQM_MAGIC = b"DIMODCQM"
_EXPR_MAGIC = b"DIMODEXPR"
_MAX_HEADER = 64 * 1024  # the JSON of counts dimod writes is ~250 bytes
_MAX_BOUND = 2.0**53  # integers beyond are not exact in a float64
_VARTYPES = {0: dimod.BINARY, 2: dimod.INTEGER}  # dimod's C++ Vartype: BINARY, SPIN, INTEGER, REAL
_REFUSED_VARTYPES = {1: "spin", 3: "real"}
_VARINFO = np.dtype([("vartype", "i1"), ("lb", "<f8"), ("ub", "<f8")], align=False)
_QUAD = np.dtype([("u", "<i4"), ("v", "<i4"), ("bias", "<f8")], align=False)
_SENSES = {b"==": "==", b"<=": "<=", b">=": ">="}
_CONSTRAINT_PART = re.compile(r"constraints/(.+)/(lhs|rhs|sense|discrete|weight|penalty)")


def _bad(reason: str) -> JobRejected:
    return JobRejected(f"malformed CQM: {reason}")


def empty_cqm() -> dimod.ConstrainedQuadraticModel:
    """A new, empty model (dimod's constructor is untyped)."""
    return dimod.ConstrainedQuadraticModel()  # type: ignore[no-untyped-call]


def encode_cqm(cqm: dimod.ConstrainedQuadraticModel, *, compress: bool = False) -> dict[str, str]:
    """The ``problem`` of a ``cqm`` job: dimod's file bytes, base64."""
    with cqm.to_file(compress=compress) as file:
        data = file.read()
    return {"type": CQM_TYPE, "encoding": "base64", "data": base64.b64encode(data).decode("ascii")}


def decode_cqm(problem: Any, limits: JobLimits) -> dimod.ConstrainedQuadraticModel:
    """A ``cqm`` job's ``problem`` → ConstrainedQuadraticModel (JobRejected with the reason)."""
    if not isinstance(problem, dict) or problem.get("type") != CQM_TYPE:
        raise _bad(f'"type" must be "{CQM_TYPE}"')
    if set(problem) != {"type", "encoding", "data"}:
        raise _bad('expected exactly the keys "type", "encoding" and "data"')
    if problem["encoding"] != "base64":
        raise _bad('"encoding" must be "base64"')
    data = problem["data"]
    if not isinstance(data, str):
        raise _bad('"data" must be a base64 string')
    if len(data) * 3 // 4 > limits.max_payload_bytes:
        raise JobRejected(
            f"CQM data of ~{len(data) * 3 // 4} bytes over the limit of {limits.max_payload_bytes}"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f'"data" is not base64 ({exc})') from None
    return read_cqm(raw, limits)


def is_cqm_file(head: bytes) -> bool:
    """Whether bytes start like a file of ``ConstrainedQuadraticModel.to_file()``."""
    return head.startswith(CQM_MAGIC)


@dataclass(frozen=True, slots=True)
class _Expression:
    indices: npt.NDArray[np.int32]  # the model's variable index of each local variable
    offset: float
    linear: npt.NDArray[np.float64]
    quadratic: npt.NDArray[np.void]  # (u, v, bias), u and v local indices

    @property
    def interactions(self) -> int:
        return len(self.quadratic)


def read_cqm(raw: bytes, limits: JobLimits) -> dimod.ConstrainedQuadraticModel:
    """The bytes of ``ConstrainedQuadraticModel.to_file()`` → the model, checked against ``limits``
    before anything is built (see the module docstring); JobRejected with the reason."""
    counts, _ = _header(raw, CQM_MAGIC, "file", version=(2, 0))
    n, c = counts.get("num_variables"), counts.get("num_constraints")
    if type(n) is not int or type(c) is not int or n < 0 or c < 0:
        raise _bad("the header's num_variables and num_constraints must be non-negative integers")
    if n > limits.max_variables:
        raise JobRejected(f"too many variables: {n} > limit {limits.max_variables}")
    if c > limits.max_constraints:
        raise JobRejected(f"too many constraints: {c} > limit {limits.max_constraints}")
    members = _unzip(raw, 3 + 6 * c, limits.max_unpacked_bytes)
    varinfo = _varinfo(members.pop("varinfo", None), n)
    labels = _variable_labels(members.pop("variable_labels.json", None), n)
    objective = _expression(members.pop("objective", None), n, "objective")
    constraints = _constraints(members, n)
    if len(constraints) != c:
        raise _bad(f"the header says {c} constraints, the archive holds {len(constraints)}")
    interactions = objective.interactions + sum(e.interactions for _, e, _, _ in constraints)
    if interactions > limits.max_interactions:
        raise JobRejected(f"too many interactions: {interactions} > limit {limits.max_interactions}")
    need = model_bytes(n, interactions)
    if need > limits.max_model_bytes:
        raise JobRejected(
            f"model too large: {n} variables and {interactions} interactions need ~{need:,} bytes in a "
            f"solver (40·n² + 32·m) > limit max_model_bytes {limits.max_model_bytes:,}"
        )
    for what, expr in [
        ("objective", objective),
        *((f"constraint {lab!r}", e) for lab, e, _, _ in constraints),
    ]:
        _check_self_loops(expr, varinfo, what)
    return _build(varinfo, labels, objective, constraints)


def _header(raw: bytes, magic: bytes, what: str, version: tuple[int, int]) -> tuple[dict[str, Any], int]:
    """(the header's JSON dict, where the data after it starts); JobRejected when it is not one."""
    if not raw.startswith(magic):
        raise _bad(f"the {what} does not start with {magic.decode()}")
    at = len(magic)
    if len(raw) < at + 6:
        raise _bad(f"the {what}'s header is cut short")
    found = (raw[at], raw[at + 1])
    if found != version:
        raise _bad(
            f"{what} format version {found[0]}.{found[1]} (this worker reads {version[0]}.{version[1]})"
        )
    (length,) = struct.unpack_from("<I", raw, at + 2)
    if length > _MAX_HEADER or at + 6 + length > len(raw):
        raise _bad(f"the {what}'s header length {length} is out of range")
    try:
        data = json.loads(raw[at + 6 : at + 6 + length].decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad(f"the {what}'s header is not ASCII JSON") from None
    if not isinstance(data, dict):
        raise _bad(f"the {what}'s header must be a JSON object")
    return data, at + 6 + length


def _unzip(raw: bytes, max_members: int, max_bytes: int) -> dict[str, bytes]:
    """Every member of the archive in ``raw``, each read with a byte limit: at most ``max_members`` of
    them, ``max_bytes`` unpacked in all, stored or deflated, unencrypted, no name twice."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            infos = archive.infolist()
            if len(infos) > max_members:
                raise _bad(f"{len(infos)} archive members, at most {max_members} for its constraints")
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise _bad("an archive member's name appears twice")
            declared = sum(info.file_size for info in infos)
            if declared > max_bytes:
                raise JobRejected(
                    f"the CQM unpacks to {declared:,} bytes > limit max_unpacked_bytes {max_bytes:,}"
                )
            members, left = {}, max_bytes
            for info in infos:
                if info.flag_bits & 0x1:
                    raise _bad(f"archive member {info.filename[:60]!r} is encrypted")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise _bad(f"archive member {info.filename[:60]!r} uses compression {info.compress_type}")
                with archive.open(info) as member:
                    data = member.read(min(left, info.file_size) + 1)
                if len(data) > info.file_size or len(data) > left:
                    raise JobRejected(f"archive member {info.filename[:60]!r} unpacks beyond its size")
                left -= len(data)
                members[info.filename] = data
    except JobRejected:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise _bad(f"not a readable zip archive ({type(exc).__name__}: {str(exc)[:120]})") from None
    except RuntimeError as exc:  # encrypted, or a member that needs a password
        raise _bad(f"the archive cannot be read ({str(exc)[:120]})") from None
    return members


def _section(data: bytes, at: int, magic: bytes, length_bytes: int = 4) -> tuple[bytes, int]:
    """(the payload of the section at ``at``, where the next section starts)."""
    if data[at : at + 4] != magic:
        raise _bad(f"expected a {magic.decode()} section")
    end = at + 4 + length_bytes
    if end > len(data):
        raise _bad(f"the {magic.decode()} section is cut short")
    length = int.from_bytes(data[at + 4 : end], "little")
    if length > len(data) - end:
        raise _bad(f"the {magic.decode()} section's length {length} runs past its member")
    return data[end : end + length], end + length


def _array(payload: bytes, dtype: np.dtype[Any], count: int, what: str) -> npt.NDArray[Any]:
    if len(payload) < dtype.itemsize * count:
        raise _bad(f"{what} holds {len(payload)} bytes, {count} entries need {dtype.itemsize * count}")
    return np.frombuffer(payload, dtype=dtype, count=count)


def _varinfo(data: bytes | None, n: int) -> npt.NDArray[np.void]:
    if data is None:
        raise _bad("the archive has no varinfo")
    payload, _ = _section(data, 0, b"VTYP")
    info = _array(payload, _VARINFO, n, "varinfo")
    kinds = info["vartype"]
    for code, name in _REFUSED_VARTYPES.items():
        if (kinds == code).any():
            raise JobRejected(f"{name} variables are not supported in cqm jobs (binary and integer only)")
    if not np.isin(kinds, list(_VARTYPES)).all():
        raise _bad(f"unknown vartype code {int(kinds[~np.isin(kinds, list(_VARTYPES))][0])}")
    lb, ub = info["lb"], info["ub"]
    binary = kinds == 0
    if not ((lb[binary] == 0) & (ub[binary] == 1)).all():
        raise _bad("a binary variable's bounds must be [0, 1]")
    if (
        not (np.isfinite(lb) & np.isfinite(ub)).all()
        or (np.abs(lb) > _MAX_BOUND).any()
        or (np.abs(ub) > _MAX_BOUND).any()
    ):
        raise _bad("variable bounds must be finite, within ±2**53")
    if (lb != np.floor(lb)).any() or (ub != np.floor(ub)).any() or (lb > ub).any():
        raise _bad("an integer variable's bounds must be integers with lower <= upper")
    return info


def _variable_labels(data: bytes | None, n: int) -> list[Hashable]:
    if data is None:
        return list(range(n))
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("variable_labels.json is not UTF-8 JSON") from None
    if not isinstance(raw, list) or len(raw) != n:
        raise _bad(f"variable_labels.json must be a list of {n} labels")
    try:
        return _labels(raw)
    except JobRejected as exc:
        raise _bad(str(exc).removeprefix("malformed BQM: ")) from None


def _finite(values: npt.NDArray[np.float64], what: str) -> None:
    if not np.isfinite(values).all() or (np.abs(values) > 1e300).any():
        raise JobRejected(f"non-finite or huge bias in {what}")


def _expression(data: bytes | None, n: int, what: str) -> _Expression:
    if data is None:
        raise _bad(f"the archive has no {what}")
    head, at = _header(data, _EXPR_MAGIC, what, version=(2, 0))
    shape, dtype, itype = head.get("shape"), head.get("dtype"), head.get("itype")
    if dtype != "float64" or itype != "int32":
        raise _bad(f"{what}: biases must be float64 and indices int32")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(s) is int and s >= 0 for s in shape)):
        raise _bad(f"{what}: shape must be [variables, interactions]")
    nv, ni = shape
    if nv > n:
        raise _bad(f"{what} has {nv} variables, the model {n}")
    if ni > nv * (nv + 1) // 2:
        raise _bad(f"{what} has {ni} interactions among {nv} variables")
    payload, at = _section(data, at, b"INDX")
    indices = _array(payload, np.dtype("<i4"), nv, f"{what}'s indices")
    if nv and not (int(indices.min()) >= 0 and int(indices.max()) < n):
        raise _bad(f"{what} names a variable index outside [0, {n})")
    if len(np.unique(indices)) != nv:
        raise _bad(f"{what} names a variable twice")
    payload, at = _section(data, at, b"OFFS")
    offset = float(_array(payload, np.dtype("<f8"), 1, f"{what}'s offset")[0])
    payload, at = _section(data, at, b"LINB")
    linear = _array(payload, np.dtype("<f8"), nv, f"{what}'s linear biases")
    payload, at = _section(data, at, b"QUAD", length_bytes=8)
    quadratic = _array(payload, _QUAD, ni, f"{what}'s quadratic biases")
    if ni and not (
        min(int(quadratic["u"].min()), int(quadratic["v"].min())) >= 0
        and max(int(quadratic["u"].max()), int(quadratic["v"].max())) < nv
    ):
        raise _bad(f"{what}'s interactions name a local index outside [0, {nv})")
    _finite(np.array([offset]), f"{what}'s offset")
    _finite(linear, what)
    _finite(quadratic["bias"], what)
    return _Expression(indices, offset, linear, quadratic)


def _check_self_loops(expr: _Expression, varinfo: npt.NDArray[np.void], what: str) -> None:
    loops = expr.quadratic["u"] == expr.quadratic["v"]
    if loops.any():
        local = expr.quadratic["u"][loops]
        if (varinfo["vartype"][expr.indices[local]] == 0).any():
            raise _bad(f"{what} squares a binary variable (x*x is x: a linear term)")


_Constraint = tuple[Hashable, _Expression, str, float]  # label, lhs, sense, rhs


def _constraints(members: dict[str, bytes], n: int) -> list[_Constraint]:
    parts: dict[str, dict[str, bytes]] = {}
    for name, data in members.items():
        match = _CONSTRAINT_PART.fullmatch(name)
        if match is None:
            raise _bad(f"unknown archive member {name[:60]!r}")
        parts.setdefault(match.group(1), {})[match.group(2)] = data
    out: list[_Constraint] = []
    seen: set[str] = set()
    for key, part in parts.items():
        label = _constraint_label(key)
        if str(label) in seen:
            raise _bad(f"constraint label {str(label)[:60]!r} appears twice")
        seen.add(str(label))
        if "weight" in part or "penalty" in part:
            raise JobRejected(
                f"constraint {str(label)[:60]!r} is soft (weighted): cqm jobs take hard constraints only"
            )
        missing = [p for p in ("lhs", "rhs", "sense") if p not in part]
        if missing:
            raise _bad(f"constraint {str(label)[:60]!r} has no {', '.join(missing)}")
        sense = _SENSES.get(part["sense"])
        if sense is None:
            raise _bad(f"constraint {str(label)[:60]!r}: sense must be ==, <= or >=")
        if len(part["rhs"]) != 8:
            raise _bad(f"constraint {str(label)[:60]!r}: rhs must be one float64")
        rhs = float(np.frombuffer(part["rhs"], "<f8")[0])
        _finite(np.array([rhs]), f"constraint {str(label)[:60]!r}'s rhs")
        out.append((label, _expression(part["lhs"], n, f"constraint {str(label)[:60]!r}"), sense, rhs))
    return out


def _constraint_label(key: str) -> Hashable:
    try:
        raw = json.loads(key)
    except (ValueError, RecursionError):
        raise _bad(f"constraint folder {key[:60]!r} is not a JSON label") from None
    try:
        return _label(raw)
    except JobRejected as exc:
        raise _bad(str(exc).removeprefix("malformed BQM: ")) from None


def _build(
    varinfo: npt.NDArray[np.void],
    labels: list[Hashable],
    objective: _Expression,
    constraints: list[_Constraint],
) -> dimod.ConstrainedQuadraticModel:
    """The model from checked parts, through dimod's public API only."""
    cqm = empty_cqm()
    try:
        for label, (kind, lb, ub) in zip(labels, varinfo.tolist(), strict=True):
            if kind == 0:
                cqm.add_variable("BINARY", label)
            else:
                cqm.add_variable("INTEGER", label, lower_bound=lb, upper_bound=ub)
        _fill(cqm.objective, objective, labels)
        for label, expr, sense, rhs in constraints:
            cqm.add_constraint_from_iterable([], sense, rhs, label=label)
            _fill(cqm.constraints[label].lhs, expr, labels)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:  # checked above: a rejection all the same
        raise _bad(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    return cqm


def _fill(target: Any, expr: _Expression, labels: list[Hashable]) -> None:
    local = [labels[i] for i in expr.indices.tolist()]
    for v, bias in zip(local, expr.linear.tolist(), strict=True):
        target.add_linear(v, bias)
    for u, v, bias in expr.quadratic.tolist():
        target.add_quadratic(local[u], local[v], bias)
    target.offset += expr.offset
