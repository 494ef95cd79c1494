"""farm.agent.wirejson: json.dumps/json.loads on _json alone, with json's results and errors."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from farm.agent import wirejson

TEXTS = ["", "a", "héllo", "\u2603 snow", 'quote"back\\slash', "ctl\x00\x1f\n\t", "\ud83d\ude00"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "none"] + (["list", "dict"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 7, 2**70, -(2**40)])
    if kind == "float":
        return rng.choice([0.5, -1e300, 3.141592653589793, 1e-7, float("inf"), float("nan")])
    if kind == "str":
        return rng.choice(TEXTS)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(TEXTS) + str(i): random_value(rng, depth + 1) for i in range(rng.randint(0, 4))
    }


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("separators", [None, (",", ":")])
def test_dumps_is_json_dumps(separators: tuple[str, str] | None) -> None:
    rng = random.Random(5)
    for _ in range(500):
        value = random_value(rng)
        assert wirejson.dumps(value, separators=separators) == json.dumps(
            value, separators=separators
        )


def test_loads_is_json_loads() -> None:
    rng = random.Random(6)
    for _ in range(500):
        text = json.dumps(random_value(rng), indent=rng.choice([None, 1]))
        text = rng.choice(["", " ", "\n\t "]) + text + rng.choice(["", " \r\n"])
        assert same(wirejson.loads(text), json.loads(text))


@pytest.mark.parametrize(
    "text", ["", " ", "{", '{"a":}', "[1,]", "1 2", '{"a":1} x', "nul", '"\\x"', "\ufeff{}", "[1e]"]
)
def test_loads_fails_as_json_loads_does(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as ours:
        wirejson.loads(text)
    assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos)


def test_dumps_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        wirejson.dumps({"x": object()})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        wirejson.dumps(loop)


def test_other_arguments_and_bytes_go_to_json() -> None:
    assert wirejson.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a": 2, "b": 1}'
    assert wirejson.loads(b'{"a": 1}') == {"a": 1}
    assert wirejson.loads("1.5", parse_float=str) == "1.5"


def test_a_bad_frame_before_json_was_imported_is_a_json_error() -> None:
    """A fresh agent (json not imported yet) still answers bad JSON with bad_frame."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from farm.agent import wirejson\n"
        "assert 'json.decoder' not in sys.modules\n"
        "try:\n"
        "    wirejson.loads('{not json')\n"
        "except ValueError as exc:\n"
        "    print(type(exc).__name__, exc.pos)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["JSONDecodeError", "1"]
