"""farm report of a real run (local agents): the page renders in headless Chromium, charts shown."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from tests.helpers import run_farm

CHROMIUM = "/usr/bin/chromium"

# Written into the test's directory and run as `reportdemo:ReportDemoTaskSet`: every job
# kind the report colours, deadline misses guaranteed (30 ms of sleep against 10 ms).
DEMO = '''
from farm.taskset import Task, TaskSet


class ReportDemoTaskSet(TaskSet):
    """Jobs that end well, miss their critical time, overrun their period and fail: 2 variants."""

    def __init__(self):
        super().__init__()
        base = {"period": 100, "numberofjobs": 3}
        self.append(Task({"pkg": "hey", "config": {}, "priority": [10, 50], **base}))
        self.append(Task({"pkg": "idle", "config": {"ms": 30}, "criticaltime": 10, **base}))
        self.append(Task({"pkg": "idle", "config": {"ms": 250}, "period": 100,
                          "numberofjobs": 2}))
        self.append(Task({"pkg": "shell", "config": {"command": "exit 3"}, "numberofjobs": 1}))
'''


def screenshot(page: Path, shot: Path, profile: Path) -> None:
    """Headless Chromium screenshot of ``page``; its whole process group is ended afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: install it with `apt-get install chromium`")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        page.resolve().as_uri(),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers chromium may leave behind
        except ProcessLookupError:
            pass
        proc.wait()
    assert shot.exists(), f"chromium wrote no screenshot (exit {proc.returncode}):\n{out[-2000:]}"


def test_report_of_a_real_run_renders_in_chromium(tmp_path: Path) -> None:
    (tmp_path / "reportdemo.py").write_text(DEMO)
    res = run_farm(
        tmp_path,
        "run",
        "reportdemo:ReportDemoTaskSet",
        "--backend",
        "local",
        "--machines",
        "2",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    db = tmp_path / "results.db"
    res = run_farm(tmp_path, "report", str(db))
    assert res.returncode == 0, res.stderr
    index = Path(res.stdout.strip())
    assert index == (tmp_path / "report" / "index.html").resolve()
    page = index.read_text()
    pngs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) == 3 + 2, "summary, responses, misses and one chart per task set"
    for data in pngs:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert {p.name for p in index.parent.glob("*.png")} >= {"summary.png", "set-1.png", "set-2.png"}
    # the run had overruns (250 ms of sleep in 100 ms periods) and failures (exit 3), and
    # the summary row counts them as misses: 2 sets, 2 finished, 0, 0, 0, N jobs, M misses
    assert "EXIT_PERIOD: 2" in page and "EXIT_ERROR: 1" in page
    row = re.search(r"<td>ReportDemoTaskSet</td>((?:<td>[^<]*</td>){8})", page)
    assert row, "summary row missing"
    cells = re.findall(r"<td>([^<]*)</td>", row.group(1))
    assert cells[:5] == ["2", "2", "0", "0", "0"] and int(cells[6]) >= 4, cells

    shot = tmp_path / "shot.png"
    screenshot(index, shot, tmp_path / "chromium-profile")
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    non_white = (pixels.min(axis=2) < 0.95).mean()
    assert pixels.std() > 0.05 and non_white > 0.05, (pixels.std(), non_white)

    # chart colours made it to the screen: EXIT green (and the finished bar), and the
    # misses: EXIT_CRITICAL orange or EXIT_PERIOD pink (task 3 always overruns)
    def share(rgb: str) -> int:
        want = np.array([int(rgb[k : k + 2], 16) for k in (1, 3, 5)]) / 255
        return int(np.all(np.abs(pixels - want) < 0.03, axis=2).sum())

    green, misses = share("#4caf50"), share("#ff9800") + share("#e91e63")
    assert green > 500 and misses > 100, (green, misses)
    shutil.copy(shot, index.parent / "screenshot.png")


def test_report_cli_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"junk" * 1000)
    with sqlite3.connect(tmp_path / "other.db") as con:
        con.execute("CREATE TABLE t (x)")
    con.close()
    for name, message in (
        ("missing.db", "no results database"),
        ("junk.db", "cannot read"),
        ("other.db", "not a farm results database"),
    ):
        res = run_farm(tmp_path, "report", name)
        assert res.returncode == 2 and message in res.stderr, (name, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "report").exists()
