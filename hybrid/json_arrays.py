"""A job's JSON with the model's long number arrays read straight into NumPy.

A complete model of 2000 variables is 28.6 MB of JSON, almost all of it three arrays of two million
numbers (``quadratic_head``, ``quadratic_tail``, ``quadratic_biases``). Parsed into Python lists (orjson),
then checked and converted to NumPy, they took 0.55 s of a 1 s deadline on a 2-core box; read as below,
about a third of that (``bench/decode.py``).

:func:`parse_arrays` finds each long array by its key (``"quadratic_head": [``), parses the document
with those arrays replaced by a marker string (orjson, on what is left: the envelope, the labels), and
keeps the fast reading only where the marker came back exactly as the value of that key in the model,
so the key was where it looked, once, and not inside a string or another object. The arrays' text is
then read by kind:

- index arrays (``quadratic_head``, ``quadratic_tail``): when the text holds nothing but digits, commas
  and JSON whitespace, ``np.fromstring`` reads it as int64, and the reading counts only when every
  number was written as JSON writes it (one value per comma, no leading zero: the digits of the values
  add up to the text's digits) and has at most 18 digits (NumPy clips what int64 cannot hold);
- bias arrays (``linear_biases``, ``quadratic_biases``): when the text holds nothing but what numbers are
  made of (digits, ``-+.eE``), commas and whitespace, orjson parses it as a list (so nothing but numbers
  can come of it) and NumPy converts it once.

Anything else (a key written with escapes, a repeated key, a number orjson refuses, a letter, a
bracket) makes :func:`parse_arrays` return None: the caller parses the whole document as before, and
its checks name what is wrong. The result is the document orjson gives, with those lists as arrays
(equal value for value: ``tests/unit/hybrid/test_json_arrays.py`` compares the two on random and
hostile inputs); the model's checks (:func:`~qxedge.hybrid.wire.check_bqm`) then run on the arrays.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np
import orjson

INDEX_KEYS = ("quadratic_head", "quadratic_tail")
BIAS_KEYS = ("linear_biases", "quadratic_biases")
MIN_ARRAY_BYTES = 4096  # a shorter array is left to orjson with the rest of the document
_WHITESPACE = b" \t\n\r"  # JSON's whitespace
_INDEX_TEXT = b"0123456789," + _WHITESPACE
_NUMBER_TEXT = b"0123456789-+.eE," + _WHITESPACE
_OPENING = re.compile(rb'"(' + "|".join(INDEX_KEYS + BIAS_KEYS).encode() + rb')"[ \t\n\r]*:[ \t\n\r]*\[')
_LARGEST = 10**18  # index values read here have at most 18 digits (an index is below 2**31 anyway)
_POWERS = 10 ** np.arange(1, 18, dtype=np.int64)  # 10 .. 10**17: the digits of a value below _LARGEST


def parse_arrays(data: bytes, min_array_bytes: int | None = None) -> Any | None:
    """``orjson.loads(data)`` with the model's long number arrays as NumPy arrays (int64 indices, float64
    biases), or None when that reading does not apply (the caller then parses ``data`` whole). The model
    is the document's ``problem`` object when it has one (a job envelope), else the document itself (a
    bare serialised model). Arrays shorter than ``min_array_bytes`` (default :data:`MIN_ARRAY_BYTES`)
    are left to orjson."""
    shortest = MIN_ARRAY_BYTES if min_array_bytes is None else min_array_bytes
    found: dict[str, list[re.Match[bytes]]] = {}
    for match in _OPENING.finditer(data):
        found.setdefault(match.group(1).decode(), []).append(match)
    spans = []
    for key, matches in found.items():
        if len(matches) > 1:
            continue  # written more than once: orjson decides
        end = data.find(b"]", matches[0].end())
        if end - matches[0].end() >= shortest:
            spans.append((matches[0].end() - 1, end + 1, key))  # the array, brackets included
    if not spans:
        return None
    spans.sort()
    nonce = os.urandom(8).hex()
    pieces, at = [], 0
    for i, (start, end, _) in enumerate(spans):
        if start < at:
            return None  # an array found inside another: not the model's
        pieces += [data[at:start], b'"', nonce.encode(), b"-", str(i).encode(), b'"']
        at = end
    pieces.append(data[at:])
    try:
        doc = orjson.loads(b"".join(pieces))
    except orjson.JSONDecodeError:
        return None
    model = doc.get("problem", doc) if isinstance(doc, dict) else None
    if not isinstance(model, dict):
        return None
    for i, (start, end, key) in enumerate(spans):
        if model.get(key) != f"{nonce}-{i}":
            return None
        text = data[start + 1 : end - 1]
        values = _indices(text) if key in INDEX_KEYS else _biases(text)
        if values is None:
            return None
        model[key] = values
    return doc


def _indices(text: bytes) -> np.ndarray | None:
    """Non-negative decimal integers, each written as JSON writes it, as int64; None otherwise."""
    if text.translate(None, _INDEX_TEXT):
        return None  # a sign, a point, a letter...: orjson and the model's checks say what it is
    commas = text.count(b",")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # text NumPy stops reading early: not a plain list
            values = np.fromstring(text, dtype=np.int64, sep=",")
    except (ValueError, DeprecationWarning):
        return None
    if values.size != commas + 1 or values.size == 0 or (values < 0).any() or values.max() >= _LARGEST:
        return None  # a value of 19 digits or more may have been clipped to 2**63 - 1: orjson decides
    digits = len(text) - commas - (len(text) - len(text.translate(None, _WHITESPACE)))
    # a value's digits: 1 + how many powers of ten it reaches; a leading zero, a value clipped at 64
    # bits or digits NumPy skipped would make the text longer than its values
    written = values.size + int(np.searchsorted(_POWERS, values, side="right").sum())
    return values if written == digits else None


def _biases(text: bytes) -> np.ndarray | None:
    """Numbers as float64 (orjson reads them: only numbers can come of this text); None otherwise."""
    if text.translate(None, _NUMBER_TEXT):
        return None
    try:
        values = orjson.loads(b"[" + text + b"]")
    except orjson.JSONDecodeError:
        return None
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # pragma: no cover - orjson refuses integers beyond 64 bits
        return None
