"""Before and after, side by side in one run: a bench script of two checkouts, A B B A.

    .venv/bin/python bench/compare.py --before ../farm-old [--runs 3] -- dispatch.py --sets 200

Runs ``bench/<script> ARGS`` from the ``--before`` checkout and from this one,
alternating (before, after, after, before, ...) so that a drift of the machine's
speed touches both alike and neither side always runs first (this box's speed
drifts within minutes). Each run is a fresh process whose ``farm`` is imported
from its own checkout (``PYTHONPATH``). Prints one JSON document: for every
numeric figure of the script's JSON (dotted path), the median of the runs of
each side and after/before. Use a ``git worktree add`` of the old commit as
``--before``; the guest image (``images/``) must exist in both.

``--script-from after`` runs this checkout's ``bench/<script>`` on both sides (for a
script the old checkout does not have yet, e.g. fidelity.py): the before side still
imports its own ``farm`` (``PYTHONPATH``, working directory) and so uses its own
agent and image; the script must then not put its own checkout on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def run(
    checkout: Path, script: str, args: list[str], timeout: float, script_from: Path | None = None
) -> dict[str, Any]:
    """One run of ``bench/script`` of ``script_from`` (default: ``checkout``) with
    ``checkout``'s farm: its JSON document."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    argv = [sys.executable, str((script_from or checkout) / "bench" / script), *args]
    res = subprocess.run(
        argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"{checkout}: {script} exited {res.returncode}:\n{res.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(res.stdout[res.stdout.index("{") :])
    return doc


def numbers(doc: Any, prefix: str = "") -> dict[str, float]:
    """Every int/float leaf of a JSON document by dotted path (lists of numbers left out).

    Objects inside lists are keyed by their position (``curve.0.sets_per_s``).
    """
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.update(numbers(value, f"{prefix}{key}."))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            if isinstance(value, dict):
                out.update(numbers(value, f"{prefix}{i}."))
    elif isinstance(doc, bool):
        pass
    elif isinstance(doc, int | float):
        out[prefix.rstrip(".")] = float(doc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the old checkout")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--script-from",
        choices=("own", "after"),
        default="own",
        help="whose bench script each side runs: its own, or this checkout's for both",
    )
    parser.add_argument("script", help="bench script, e.g. dispatch.py")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    sides = {"before": opts.before.resolve(), "after": HERE}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    t0 = time.monotonic()
    for n in range(opts.runs):
        order = list(sides.items()) if n % 2 == 0 else list(sides.items())[::-1]
        for side, checkout in order:  # before, after, after, before, ...: no side always first
            source = HERE if opts.script_from == "after" else None
            doc = run(checkout, opts.script, opts.args, opts.timeout, source)
            runs[side].append(numbers(doc))
    figures: dict[str, dict[str, float | None]] = {}
    for key in sorted(set(runs["before"][0]) | set(runs["after"][0])):
        # a figure only one side has (a case the old checkout skips) is kept, None on the other
        got = {name: [r[key] for r in runs[name] if key in r] for name in runs}
        before = statistics.median(got["before"]) if got["before"] else None
        after = statistics.median(got["after"]) if got["after"] else None
        ratio = round(after / before, 3) if before and after is not None else None
        figures[key] = {"before": before, "after": after, "after/before": ratio}
    summary = {
        "bench": "compare",
        "script": opts.script,
        "args": opts.args,
        "runs_each": opts.runs,
        "script_from": opts.script_from,
        "order": "before, after, after, before, ... (ABBA)",
        "before": str(sides["before"]),
        "after": str(sides["after"]),
        "took_s": round(time.monotonic() - t0, 1),
        "figures": figures,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
