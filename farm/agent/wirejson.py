"""``json.dumps``/``json.loads`` for the wire, on ``_json`` alone (stdlib only).

The agent's handshake needs JSON, but the ``json`` package imports ``re``
(and with it ``enum``, ``re._parser``, ``re._compiler``) and compiles three
patterns it uses only in its pure-Python fallbacks: 5.8 M of the 18 M
instructions the agent's imports cost before it serves (``-X importtime``
under ``-icount``, bench/boot_breakdown.py), tens of milliseconds of a cold
boot under TCG. The C accelerator ``_json`` does the actual work for both
anyway; this module drives it directly, with ``json``'s own arguments, so
the output and the errors are the same. Anything but the plain calls (other
keyword arguments, a Python without ``_json``) goes to ``json`` itself.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    from typing import Any, NoReturn

try:
    from _json import encode_basestring_ascii as _encode_str
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # another Python: the json package (its own fallbacks)
    _make_encoder = _make_scanner = None  # type: ignore[assignment,misc]

_SPACES = " \t\n\r"  # what json.loads skips around the value (its WHITESPACE)
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


def _default(o: object) -> object:
    """json.JSONEncoder.default: nothing beyond the JSON types."""
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


class _Context:
    """What ``_json.make_scanner`` reads off a json.JSONDecoder (its defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _make_scanner(_Context()) if _make_scanner is not None else None  # type: ignore[arg-type]


def dumps(obj: Any, *, separators: tuple[str, str] | None = None, **kwargs: Any) -> str:
    """``json.dumps(obj, separators=...)`` (ASCII, circular check, NaN allowed, no indent)."""
    if kwargs or _make_encoder is None:
        import json

        return json.dumps(obj, separators=separators, **kwargs)
    if isinstance(obj, str):
        return str(_encode_str(obj))
    item_sep, key_sep = separators if separators is not None else (", ", ": ")
    return "".join(_encoder(key_sep, item_sep)(obj, 0))


def _encoder(key_sep: str, item_sep: str) -> Any:
    """json.JSONEncoder's C encoder with its defaults (a new circular-check dict each time)."""
    return _make_encoder({}, _default, _encode_str, None, key_sep, item_sep, False, False, True)


def loads(s: str | bytes | bytearray, **kwargs: Any) -> Any:
    """``json.loads(s)``: ValueError (json.JSONDecodeError) for anything but one JSON value."""
    if kwargs or _scan is None or not isinstance(s, str) or s.startswith("\ufeff"):
        import json  # bytes (encoding detection), hooks, the BOM error: json's own way

        return json.loads(s, **kwargs)
    start = len(s) - len(s.lstrip(_SPACES))
    try:
        obj, end = _scan(s, start)
    except StopIteration as exc:
        _fail("Expecting value", s, exc.value)
    except SystemError:  # _json raises its errors from json.decoder, if already imported
        import json  # (CPython 3.11: else NULL without an exception): json's own error

        return json.loads(s)
    rest = len(s) - len(s[end:].lstrip(_SPACES))
    if rest != len(s):
        _fail("Extra data", s, rest)
    return obj


def _fail(message: str, s: str, pos: int) -> NoReturn:
    """Raise json's JSONDecodeError (imports json: errors only)."""
    from json import JSONDecodeError

    raise JSONDecodeError(message, s, pos) from None


if _make_encoder is not None:
    try:  # another Python whose _json takes other arguments: json's way
        _encoder(":", ",")
    except TypeError:
        _make_encoder = None  # type: ignore[assignment,misc]
