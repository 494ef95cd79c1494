"""``farm doctor`` as a subprocess: checks with fixes, exit codes, config sources, no leftovers."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from farm.config import FarmConfig
from farm.doctor import image_staleness
from farm.image import builder
from farm.image.debs import sha256_file

REPO = Path(__file__).resolve().parents[2]
CHECKS = [
    "qemu",
    "board",
    "libvirt",
    "kvm",
    "screen",
    "dhcpd",
    "bridge",
    "image",
    "privileges",
    "state_dir",
    "log_dir",
]


def doctor(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    tmp = cwd.parent / "tmpdir"
    tmp.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "farm.cli", *args, "doctor", "--json"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not list(tmp.iterdir()), "doctor left temporary files behind"
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else None, proc.stderr


def test_doctor_reports_every_check_and_the_effective_config(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "farm.toml").write_text(
        f'backend = "qemu"\nmax_machines = 2\nimage_dir = "{REPO / "images"}"\n'
        '[profile]\naccel = "tcg"\n'
    )
    code, doc, stderr = doctor(work, env={"FARM_TOKEN": "s3cret-token"})
    assert [c["name"] for c in doc["checks"]] == CHECKS, stderr
    for check in doc["checks"]:
        assert check["status"] in ("PASS", "WARN", "FAIL")
        if check["status"] != "PASS":
            assert check["fix"], check
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert code == (1 if "FAIL" in statuses.values() else 0) and doc["ok"] == (code == 0)
    # this CI host has everything (scripts/setup ran, we are root); the KVM probe is skipped
    assert statuses["qemu"] == statuses["libvirt"] == statuses["screen"] == "PASS", doc
    assert statuses["kvm"] == "PASS" and "no probe" in _detail(doc, "kvm")
    assert "QEMU emulator version" in _detail(doc, "qemu")
    assert statuses["board"] == "PASS" and _detail(doc, "board") == "microvm (microvm,acpi=off)"

    rows = {r["key"]: r for r in doc["config"]}
    assert list(rows) == [f.name for f in dataclasses.fields(FarmConfig)]
    assert rows["backend"]["value"] == "qemu" and "farm.toml" in rows["backend"]["source"]
    assert rows["max_machines"]["value"] == 2 and "farm.toml" in rows["max_machines"]["source"]
    assert rows["heartbeat"] == {"key": "heartbeat", "value": 1.0, "source": "default"}
    assert rows["token"] == {"key": "token", "value": "***", "source": "env FARM_TOKEN"}
    assert "s3cret-token" not in json.dumps(doc) + stderr
    assert rows["libvirt_uri"]["value"].startswith("qemu:///embed?root=")
    assert sorted(p.name for p in work.iterdir()) == ["farm.toml"]  # no .farm, no log


def test_missing_image_fails_with_the_build_hint(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "farm.toml").write_text('backend = "qemu"\nimage_dir = "no-images"\n')
    code, doc, _ = doctor(work)
    image = next(c for c in doc["checks"] if c["name"] == "image")
    assert code == 1 and not doc["ok"]
    assert image["status"] == "FAIL" and "image.elf" in image["detail"]
    assert image["fix"] == "farm image build"


def test_a_qemu_without_the_board_fails_with_the_q35_hint(tmp_path: Path) -> None:
    """Some QEMU builds have no microvm: said before anything starts, with the fix."""
    work = tmp_path / "work"
    work.mkdir()
    fake = tmp_path / "qemu-system-x86_64"  # lists PC boards only
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -machine ]; then printf "Supported machines are:\\n'
        'q35  Standard PC (alias of pc-q35-7.2)\\npc-q35-7.2  Standard PC\\n"; exit 0; fi\n'
        'echo "QEMU emulator version 7.2.0"\n'
    )
    fake.chmod(0o755)
    (work / "farm.toml").write_text(
        f'backend = "qemu"\nimage_dir = "{REPO / "images"}"\n'
        f'[profile]\naccel = "tcg"\nqemu = "{fake}"\n'
    )
    code, doc, stderr = doctor(work)
    board = next(c for c in doc["checks"] if c["name"] == "board")
    assert code == 1 and board["status"] == "FAIL", (doc, stderr)
    assert "no machine type microvm" in board["detail"] and 'machine = "q35"' in board["fix"]
    (work / "farm.toml").write_text(
        f'backend = "qemu"\nimage_dir = "{REPO / "images"}"\n'
        f'[profile]\naccel = "tcg"\nqemu = "{fake}"\nmachine = "q35"\n'
    )
    _, doc, _ = doctor(work)
    assert _detail(doc, "board") == "q35 (q35)"


def test_human_output_and_bad_config_exit_2(tmp_path: Path) -> None:
    (tmp_path / "farm.toml").write_text('backend = "local"\n[profile]\naccel = "tcg"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "farm.cli", "doctor"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "farm doctor" in proc.stdout and "effective configuration" in proc.stdout
    assert "PASS" in proc.stdout
    (tmp_path / "farm.toml").write_text("machine_cap = 0\n")
    code, doc, stderr = doctor(tmp_path)
    assert code == 2 and doc is None and "machine_cap" in stderr


def fake_image(image_dir: Path) -> None:
    """A tiny image dir whose manifest matches today's local inputs."""
    image_dir.mkdir()
    kernel, initrd = image_dir / builder.KERNEL_NAME, image_dir / builder.INITRD_NAME
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    recipe = builder.RECIPE_DIR
    code = builder._HERE
    manifest = {
        "kernel": {
            "inputs": {
                "builder": builder.BUILDER_VERSION,
                "code": builder.digest_files([code / n for n in builder._KERNEL_CODE]),
            },
            "output": builder.output_record(kernel),
        },
        "initrd": {
            "inputs": {
                "builder": builder.BUILDER_VERSION,
                "agent_digest": builder.digest_files(builder.agent_sources(), builder.AGENT_DIR),
                "init_digest": builder.digest_files([recipe / "init.sh.in"]),
                "udhcpc_digest": builder.digest_files([recipe / "udhcpc.script"]),
                "allowlist_digest": builder.digest_files([recipe / "python-modules.txt"]),
                "code": builder.digest_files([code / n for n in builder._INITRD_CODE]),
            },
            "output": {"file": initrd.name, "sha256": sha256_file(initrd), "size": 6},
        },
    }
    (image_dir / builder.MANIFEST_NAME).write_text(json.dumps(manifest))


def test_image_currency_follows_the_manifest(tmp_path: Path) -> None:
    images = tmp_path / "images"
    fake_image(images)
    assert image_staleness(images) == ""
    manifest_path = images / builder.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["initrd"]["inputs"]["agent_digest"] = "0" * 64  # built from an older agent
    manifest_path.write_text(json.dumps(manifest))
    assert image_staleness(images) == "initrd inputs changed: agent_digest"
    fake_image(tmp_path / "images2")
    (tmp_path / "images2" / "initrd.img").write_bytes(b"initrX")  # altered after the build
    assert image_staleness(tmp_path / "images2") == "initrd.img differs from the manifest"
    (tmp_path / "images3").mkdir()
    assert image_staleness(tmp_path / "images3") == "no manifest.json"

    work = tmp_path / "work"
    work.mkdir()
    (work / "farm.toml").write_text(f'backend = "qemu"\nimage_dir = "{images}"\n')
    _, doc, _ = doctor(work)
    image = next(c for c in doc["checks"] if c["name"] == "image")
    assert image["status"] == "WARN" and "agent_digest" in image["detail"]
    assert image["fix"] == "farm image build"


def _detail(doc: dict[str, Any], name: str) -> str:
    return str(next(c["detail"] for c in doc["checks"] if c["name"] == name))
