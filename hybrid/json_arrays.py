"""A job's JSON with the model's long number arrays read straight into NumPy.

A complete model of 2000 variables is 28.6 MB of JSON, almost all of it three arrays of two million
numbers (``quadratic_head``, ``quadratic_tail``, ``quadratic_biases``). Parsed into Python lists (orjson),
then checked and converted to NumPy, they took 0.55 s of a 1 s deadline on a 2-core box; read as below,
0.29 s with six-decimal biases (``bench/decode.py``), 0.18 s with the integer biases of
``bench/solvers.py`` (ad hoc).

:func:`parse_arrays` finds each long array by its key (``"quadratic_head": [``), parses the document
with those arrays replaced by a marker string (orjson, on what is left: the envelope, the labels), and
keeps the fast reading only where the marker came back exactly as the value of that key in the model,
so the key was where it looked, once, and not inside a string or another object. The arrays' text is
then read by kind, index arrays (``quadratic_head``, ``quadratic_tail``) as int64, bias arrays
(``linear_biases``, ``quadratic_biases``) as float64:

- by Polars' CSV reader, each comma ending a row, on every core, where the text has no whitespace but
  a space after a comma (as orjson and pydantic write JSON, or ``json.dumps``). That reader takes
  numbers JSON does not write (``05``, ``+5``, ``.5``, ``5.``) and reads the integer ``-0`` as -0.0,
  where orjson gives 0: :func:`_written_as_json` first looks every pair of neighbouring bytes up in a
  table (two uint16 views of the text) and lets the reader have the text only where no pair, and no
  ``,0`` or ``,-0`` before a digit or a comma, says otherwise;
- else (or where the reader refuses a number: two points in one, an index beyond int64) by orjson,
  as a list, which NumPy converts once, where the text holds nothing but what numbers of its kind are
  made of (an index: digits), commas and whitespace.

Anything else (a key written with escapes, a repeated key, a number orjson refuses, a letter, a
bracket) makes :func:`parse_arrays` return None: the caller parses the whole document as before, and
its checks name what is wrong. The result is the document orjson gives, with those lists as arrays
(equal value for value, -0.0 included: ``tests/unit/hybrid/test_json_arrays.py`` compares the two on
random and hostile inputs); the model's checks (:func:`~qxedge.hybrid.wire.check_bqm`) then run on the
arrays.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import orjson
import polars as pl

INDEX_KEYS = ("quadratic_head", "quadratic_tail")
BIAS_KEYS = ("linear_biases", "quadratic_biases")
MIN_ARRAY_BYTES = 4096  # a shorter array is left to orjson with the rest of the document
_WHITESPACE = b" \t\n\r"  # JSON's
_INDEX_CHARS = b"0123456789,"
_NUMBER_CHARS = b"0123456789-+.eE,"
_OPENING = re.compile(rb'"(' + "|".join(INDEX_KEYS + BIAS_KEYS).encode() + rb')"[ \t\n\r]*:[ \t\n\r]*\[')


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
    values = _numbers(text, pl.Int64, _INDEX_CHARS, _INDEX_PAIRS)
    return values if values is not None and values.dtype == np.int64 else None


def _biases(text: bytes) -> np.ndarray | None:
    """Numbers as float64; None otherwise (a number that overflows to infinity too: orjson refuses it)."""
    values = _numbers(text, pl.Float64, _NUMBER_CHARS, _NUMBER_PAIRS)
    return values if values is not None and np.isfinite(values).all() else None


def _numbers(text: bytes, dtype: type[pl.DataType], chars: bytes, pairs: np.ndarray) -> np.ndarray | None:
    """The numbers of ``text`` (``chars``: what numbers of that kind are made of, and commas) by
    Polars' CSV reader where :func:`_written_as_json` says it may, else by orjson; None where orjson
    refuses them or the text holds anything but ``chars`` and whitespace."""
    if _written_as_json(text, pairs):
        try:
            column = pl.read_csv(
                text, has_header=False, separator=";", eol_char=",", quote_char=None, schema={"x": dtype}
            ).to_series()
            if not column.null_count():
                return column.to_numpy(writable=True)
        except pl.exceptions.PolarsError:
            pass  # a number the reader refuses (two points, two exponents, beyond int64...): orjson's
    if text.translate(None, chars + _WHITESPACE):
        return None  # a sign or a point in an index, a letter...: orjson and the model's checks say what
    try:
        return np.array(orjson.loads(b"[" + text + b"]"), dtype=None if dtype is pl.Int64 else np.float64)
    except (orjson.JSONDecodeError, OverflowError):
        return None


# flags of a pair of neighbouring bytes (x, y) of ``,`` + text + ``,``
_BAD = 1  # not for Polars' reader: a pair JSON never writes in or between numbers (``5.``, ``,,``,
# ``+5``...), whitespace other than a space after a comma (the reader skips a space before a number)
_COMMA_ZERO = 2  # ``,0`` or `` 0``: a number's first digit is 0
_ZERO_DIGIT = 4  # ``0`` and a digit: with the above, a leading zero (``05``), which JSON does not write
_COMMA_MINUS = 8  # ``,-`` or `` -``: a negative number
_ZERO_COMMA = 16  # ``0,``: after ``,-``, the integer ``-0``, which orjson reads as 0 (not -0.0)


def _pair_table(chars: bytes) -> np.ndarray:
    """The flags of every pair of bytes, indexed as a little-endian uint16 (x + 256 y); a pair with a
    byte other than ``chars`` and the space is bad. A space may come after a comma only, and a number
    after it."""
    digits, signs, exponent = set(b"0123456789"), set(b"+-"), set(b"eE")
    comma, space, zero, minus = ord(","), ord(" "), ord("0"), ord("-")
    starts = digits | {minus}  # what a number starts with
    follows = {  # what may come after each byte, in a number or between two
        comma: starts | {space},
        space: starts,
        minus: digits,
        ord("+"): digits,
        ord("."): digits,
        **{e: digits | signs for e in exponent},
        **{d: set(chars) - signs for d in digits},
    }
    table = np.full(1 << 16, _BAD, dtype=np.uint8)
    for x in (*chars, space):
        for y in (*chars, space):
            flags = 0 if y in follows[x] else _BAD
            flags |= _COMMA_ZERO if x in (comma, space) and y == zero else 0
            flags |= _ZERO_DIGIT if x == zero and y in digits else 0
            flags |= _COMMA_MINUS if x in (comma, space) and y == minus else 0
            flags |= _ZERO_COMMA if (x, y) == (zero, comma) else 0
            table[x + 256 * y] = flags
    return table


_INDEX_PAIRS = _pair_table(_INDEX_CHARS)
_NUMBER_PAIRS = _pair_table(_NUMBER_CHARS)


def _written_as_json(text: bytes, pairs: np.ndarray) -> bool:
    """Whether Polars' reader would read ``text`` as orjson reads it: numbers as JSON writes them, one
    between each two commas (a space after a comma, as ``json.dumps`` writes, is let through), as far
    as the reader would not refuse them anyway. No pair of neighbouring bytes JSON never writes
    (``5.``, ``.5``, ``+5``, ``,,``, a comma at either end, other whitespace), no leading zero (``05``,
    ``-05``); and no integer ``-0``, which orjson reads as 0 and Polars as -0.0. Two points or
    exponents in one number are left to the reader, which refuses them. Each pair is looked up in
    ``pairs`` (:func:`_pair_table`): the pairs at even offsets, then at odd ones, as uint16 views of
    the text."""
    padded = b"," + text + b","
    even = pairs[np.frombuffer(padded, dtype="<u2", count=len(padded) // 2)]
    odd = pairs[np.frombuffer(padded, dtype="<u2", offset=1, count=(len(padded) - 1) // 2)]
    seen = np.bitwise_or.reduce(even) | np.bitwise_or.reduce(odd)
    if seen & _BAD:
        return False
    # pair i and pair i + 1 (",0" then "0d"): even i in (even, odd), odd i in (odd, even[1:])
    if seen & _COMMA_ZERO and (
        _followed(even, odd, _COMMA_ZERO, _ZERO_DIGIT) or _followed(odd, even[1:], _COMMA_ZERO, _ZERO_DIGIT)
    ):
        return False
    # pair i and pair i + 2 (",-" then "0d" or "0,"): both in even, or both in odd
    later = _ZERO_DIGIT | _ZERO_COMMA
    return not (
        seen & _COMMA_MINUS
        and (_followed(even, even[1:], _COMMA_MINUS, later) or _followed(odd, odd[1:], _COMMA_MINUS, later))
    )


def _followed(first: np.ndarray, then: np.ndarray, flag: int, next_flag: int) -> bool:
    """Whether some ``first[k]`` has ``flag`` where ``then[k]`` has ``next_flag``."""
    m = min(len(first), len(then))
    return bool(np.logical_and(first[:m] & flag, then[:m] & next_flag).any())
