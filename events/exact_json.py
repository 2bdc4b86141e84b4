"""JSON whose numbers are kept exactly as the producer wrote them, and the one nesting limit of
``data`` and ``context`` (``ER_MAX_JSON_DEPTH``) that every transport applies.

gRPC carries JSON as text and stores it as sent. REST and the WebSocket parse a whole request, so
their parsers (``api.parsers``, ``ws_api.consumers``) use :func:`loads_exact`: a number that a float
or an int would write back differently (``1e2``, ``1.5e-400``, forty digits of pi, ``-0``) becomes a
:class:`NumberLiteral` holding its text, and :func:`dumps_exact` writes that text back verbatim when
validation encodes the payload. Ordinary payloads have no such number and are encoded by the C
encoder as before; only a payload with one takes the slower encoder here.

What no transport can store is refused with the same message everywhere: a number that overflows a
double (``1e400``), an integer longer than Python's int/str conversion limit, nesting past the limit.
"""

import json
import math
import re
import sys
from itertools import accumulate
from json.encoder import encode_basestring  # (the C function, for ensure_ascii=False)
from typing import Any


class NumberLiteral:
    """A JSON number kept as its text. ``problem`` says why it cannot be stored (it overflows a
    double, or has too many digits for Python), or is None."""

    __slots__ = ("problem", "text")

    def __init__(self, text: str, problem: str | None = None) -> None:
        self.text = text
        self.problem = problem

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"NumberLiteral({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumberLiteral) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class UnstorableNumber(ValueError):
    """A number no transport stores; its message is the problem, e.g. ``the number 1e400 is out of
    range for a double``."""


def _out_of_range(text: str) -> str:
    return f"the number {text} is out of range for a double"


def _too_long(text: str) -> str:
    digits = len(text) - text.startswith("-")
    return f"has an integer of {digits} digits; at most {sys.get_int_max_str_digits()} are allowed"


def _float_or_literal(text: str) -> float | NumberLiteral:
    number = float(text)
    if float.__repr__(number) == text:
        return number
    return NumberLiteral(text, _out_of_range(text) if math.isinf(number) else None)


def _int_or_literal(text: str) -> int | NumberLiteral:
    try:
        number = int(text)
    except ValueError:  # longer than sys.get_int_max_str_digits()
        return NumberLiteral(text, _too_long(text))
    return number if number or text[0] != "-" else NumberLiteral(text)  # "-0" stays "-0"


def _checked(parse: Any) -> Any:
    def parse_or_refuse(text: str) -> Any:
        value = parse(text)
        if isinstance(value, NumberLiteral) and value.problem:
            raise UnstorableNumber(value.problem)
        return value

    return parse_or_refuse


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# For whole requests (REST bodies, WebSocket frames): what cannot be stored is marked, and refused
# by validation naming the field it is in.
_exact_decoder = json.JSONDecoder(
    parse_float=_float_or_literal, parse_int=_int_or_literal, parse_constant=_refuse_constant
)
# For one payload whose field is known (gRPC's JSON text): what cannot be stored is refused at once.
checked_decoder = json.JSONDecoder(
    parse_float=_checked(_float_or_literal), parse_int=_checked(_int_or_literal), parse_constant=_refuse_constant
)


def loads_exact(text: str) -> Any:
    """Parse JSON text, keeping numbers a float or int would change as ``NumberLiteral``. Raises
    ``ValueError`` (not JSON, NaN/Infinity) or ``RecursionError`` (nested past Python's stack)."""
    return _exact_decoder.decode(text)


class _HasLiteral(Exception):
    pass


def _plain_or_literal(value: Any) -> Any:
    if isinstance(value, NumberLiteral):
        raise _HasLiteral
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_fast_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_plain_or_literal)


def dumps_exact(value: Any, indent: int | None = None) -> str:
    """``value`` as compact JSON text (or indented by ``indent`` spaces), a ``NumberLiteral`` as its
    text. Raises ``UnstorableNumber``, ``ValueError`` (NaN, infinity), ``TypeError`` (not JSON) or
    ``RecursionError``."""
    if indent is None:
        try:
            return _fast_encoder.encode(value)
        except _HasLiteral:
            pass
    parts: list[str] = []
    _write(value, parts, indent, 1)
    return "".join(parts)


def _write(value: Any, out: list[str], indent: int | None, level: int) -> None:
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, NumberLiteral):
        if value.problem:
            raise UnstorableNumber(value.problem)
        out.append(value.text)
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("Out of range float values are not JSON compliant")
        out.append(float.__repr__(value))
    elif isinstance(value, dict | list | tuple):
        is_object = isinstance(value, dict)
        if not value:
            out.append("{}" if is_object else "[]")
            return
        inner = "\n" + " " * (indent * level) if indent is not None else ""
        outer = "\n" + " " * (indent * (level - 1)) if indent is not None else ""
        out.append("{" if is_object else "[")
        for position, item in enumerate(value.items() if isinstance(value, dict) else value):
            out.append(("," if position else "") + inner)
            if is_object:
                key, item = item
                if not isinstance(key, str):
                    raise TypeError(f"keys must be str, not {type(key).__name__}")
                out.append(encode_basestring(key) + (": " if indent is not None else ":"))
            _write(item, out, indent, level + 1)
        out.append(outer + ("}" if is_object else "]"))
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# --- nesting ------------------------------------------------------------------------------------------

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """How deeply JSON text nests arrays and objects: 0 for a scalar, 1 for ``[]`` or ``{"a": 1}``.
    Brackets inside strings do not count."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def nesting_problem(text: str, limit: int) -> str | None:
    """Why ``text`` nests too deeply for ``limit`` (``is nested 65 levels deep; ...``), or None.

    Text with no more brackets than the limit cannot nest past it: that count, two passes in C, is
    all almost every payload costs."""
    if text.count("{") + text.count("[") <= limit:
        return None
    depth = nesting_depth(text)
    return f"is nested {depth} levels deep; at most {limit} are allowed" if depth > limit else None
