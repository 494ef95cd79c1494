"""Human-readable NetJobs results: what the terminal and the ``-l`` log files show."""

from __future__ import annotations

import time

from farm.netjobs.runner import TargetResult, TestResult


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g}s"


def format_skew(skew: float | None) -> str:
    """``1.234 ms`` (or ``n/a`` when fewer than one command started)."""
    return "n/a" if skew is None else f"{skew * 1e3:.3f} ms"


def format_target(res: TargetResult, start_at: float | None) -> str:
    """Header line and whole output of one target."""
    parts = [f"--- {res.target}"]
    if res.address and res.address != res.target:
        parts.append(f"({res.address})")
    parts.append(f"{res.status}")
    if res.exit_code is not None:
        parts.append(f"exit {res.exit_code}")
    if res.duration is not None:
        parts.append(f"ran {res.duration:.3f} s")
    if res.started is not None and start_at is not None:
        parts.append(f"start {(res.started - start_at) * 1e3:+.3f} ms")
    parts.append(f"timeout {_seconds(res.timeout)}")
    head = " ".join(parts)
    if res.detail:
        head += f" [{res.detail}]"
    lines = [head, f"    command: {res.command}"]
    if res.output:
        lines.append(res.output.rstrip("\n"))
    return "\n".join(lines)


def format_result(result: TestResult) -> str:
    """The whole report of one test: verdict, skew, then every target with its output."""
    verdict = "PASSED" if result.passed else "FAILED"
    sim = " (simulated)" if result.simulated else ""
    began = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.began_wall))
    lines = [
        f"=== test {result.label}: {verdict}{sim} - {result.returned}/{len(result.results)} "
        f"returned, minhosts {result.minhosts}, start skew {format_skew(result.skew)} "
        f"(began {began})"
    ]
    if result.aborted:
        lines.append(f"    aborted: {result.aborted}")
    lines += [format_target(r, result.start_at) for r in result.results]
    return "\n".join(lines) + "\n"
