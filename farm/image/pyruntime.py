"""A trimmed Python runtime for the guest, taken from Debian's python3.11 packages.

Which stdlib modules go in is decided by running the *Debian* interpreter
(from the extracted packages, through their own ``ld.so``) on the build host:
it imports every stdlib module the agent's sources name (scanned with
``ast``, lazy imports in functions included) plus the allowlist
``farm/image/recipe/python-modules.txt`` (modules the stdlib or workloads import lazily),
then reports ``sys.modules``. That exact set is shipped as sourceless,
precompiled ``.pyc`` files (compiled by the same interpreter), with the
extension modules and the shared libraries they need (DT_NEEDED closure).
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

from farm.errors import ImageError
from farm.image.cpio import Tree
from farm.image.elf import Elf

log = logging.getLogger(__name__)

PY = "python3.11"
STDLIB = PurePosixPath("usr/lib") / PY
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
#: Always shipped: the interpreter finds its prefix by the os module landmark.
ALWAYS = ("os", "runpy", "encodings", "encodings.aliases", "encodings.utf_8", "encodings.ascii")

_TRACE = r"""
import sys
denied = set()

class Deny:  # a meta path finder (importlib.abc would itself import tempfile and more)
    def find_spec(self, name, path=None, target=None):
        if name in denied:
            raise ImportError(f"{name} is not shipped in the guest image", name=name)
        return None

sys.meta_path.insert(0, Deny())
import importlib, json
mods = json.loads(sys.argv[1])
denied.update(json.loads(sys.argv[2]))
failed = {}
for name in mods:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
out = {n: getattr(m, "__file__", None) for n, m in sorted(sys.modules.items())}
print(json.dumps({"modules": out, "failed": failed}))
"""

_COMPILE = r"""
import json, py_compile, sys
optimize = int(sys.argv[1])
for src, dst, dfile in json.load(sys.stdin):
    py_compile.compile(src, cfile=dst, dfile=dfile, doraise=True, optimize=optimize,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""

#: Optimization level of the shipped stdlib ``.pyc`` files: 2 drops docstrings and asserts
#: (the stdlib is tested under ``-OO``), so less to read and unmarshal at every import; the
#: agent's own code stays at 0 (``farm.agent.traffic`` uses its module docstring).
STDLIB_OPTIMIZE = 2


def resolve_in_root(root: Path, guest_path: str | PurePosixPath, depth: int = 0) -> Path:
    """Host path of a guest path inside ``root``, following symlinks within the root."""
    if depth > 16:
        raise ImageError(f"symlink loop at {guest_path} in {root}")
    parts = PurePosixPath(str(guest_path).lstrip("/")).parts
    current = PurePosixPath()
    for i, part in enumerate(parts):
        current = current / part
        host = root / current
        if host.is_symlink():
            target = os.readlink(host)
            base = (
                PurePosixPath("/")
                if target.startswith("/")
                else PurePosixPath("/") / current.parent
            )
            rest = PurePosixPath(*parts[i + 1 :]) if i + 1 < len(parts) else PurePosixPath()
            joined = PurePosixPath(os.path.normpath(str(base / target / rest)))
            return resolve_in_root(root, joined, depth + 1)
    return root / current


def interpreter(root: Path) -> list[str]:
    """argv prefix that runs the extracted Debian python on the build host."""
    loader = resolve_in_root(root, "lib64/ld-linux-x86-64.so.2")
    if not loader.is_file():
        raise ImageError(f"no ld.so in extracted packages ({loader})")
    libs = ":".join(str(root / d) for d in LIB_DIRS[:2])
    return [str(loader), "--library-path", libs, str(root / "usr/bin" / PY)]


def _run_python(root: Path, args: list[str], stdin: str = "", path: Path | None = None) -> str:
    env = {
        "PYTHONHOME": str(root / "usr"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C.UTF-8",
    }
    if path is not None:
        env["PYTHONPATH"] = str(path)
    argv = [*interpreter(root), "-S", *args]
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
            cwd=path,  # "" on sys.path (-c) is the cwd: not the host's checkout of farm
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot run the guest's python on this host: {exc}") from exc
    if proc.returncode != 0:
        raise ImageError(f"guest python failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def source_imports(files: list[Path]) -> set[str]:
    """Absolute module names imported anywhere in these sources (top level or in functions)."""
    names: set[str] = set()
    for path in files:
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (OSError, SyntaxError) as exc:
            raise ImageError(f"cannot parse agent source {path}: {exc}") from exc
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def read_allowlist(path: Path) -> list[str]:
    """Module names of an allowlist file (``#`` comments; ``!name`` = never ship)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ImageError(f"cannot read module allowlist {path}: {exc}") from exc
    return [word for line in lines for word in line.split("#", 1)[0].split()]


def trace_modules(
    root: Path, agent_root: Path, agent_modules: list[str], allowlist: list[str], scanned: set[str]
) -> dict[str, str | None]:
    """Run the guest python: import everything needed, return ``sys.modules`` as name -> file."""
    denied = sorted(n[1:] for n in allowlist if n.startswith("!"))
    allowed = [n for n in allowlist if not n.startswith("!")]
    wanted = [*ALWAYS, *allowed, *sorted(scanned - {"farm"}), *agent_modules]
    argv = ["-c", _TRACE, json.dumps(wanted), json.dumps(denied)]
    out = json.loads(_run_python(root, argv, path=agent_root))
    failed: dict[str, str] = out["failed"]
    hard = {n: e for n, e in failed.items() if n not in scanned or n.startswith("farm")}
    if hard:
        raise ImageError(f"guest python cannot import {hard}")
    for name, err in failed.items():
        log.warning("agent imports %s, not available in the guest python (%s)", name, err)
    modules: dict[str, str | None] = out["modules"]
    return modules


def compile_sources(
    root: Path, jobs: list[tuple[Path, Path, str]], optimize: int = 0, lean: bool = False
) -> None:
    """Compile (source, pyc, guest name) with the guest python (unchecked-hash pycs).

    ``optimize`` as for :func:`compile`; the guest's sourceless stdlib ``.pyc`` files are
    loaded whatever their level, so no ``-O`` flag is needed in the guest. ``lean``: without
    column positions (``-X no_debug_ranges``: tracebacks lose their ``^^^`` markers only).
    """
    if jobs:
        payload = json.dumps([[str(s), str(d), g] for s, d, g in jobs])
        flags = ["-X", "no_debug_ranges"] if lean else []
        _run_python(root, [*flags, "-c", _COMPILE, str(optimize)], stdin=payload)


def add_libraries(tree: Tree, root: Path, objects: list[PurePosixPath]) -> list[str]:
    """Add the DT_NEEDED closure (and ld.so) of ELF objects already chosen; return lib names."""
    added: list[str] = []
    todo = list(objects)
    seen: set[str] = set()
    while todo:
        obj = todo.pop()
        host = resolve_in_root(root, obj)
        for lib in Elf(host.read_bytes(), str(obj)).needed():
            if lib in seen:
                continue
            seen.add(lib)
            for libdir in LIB_DIRS:
                candidate = PurePosixPath(libdir) / lib
                if (root / candidate).exists() or (root / candidate).is_symlink():
                    copy_path(tree, root, candidate)
                    todo.append(candidate)
                    added.append(lib)
                    break
            else:
                raise ImageError(f"{obj} needs {lib}, not found in the extracted packages")
    for loader in ("lib64/ld-linux-x86-64.so.2",):
        copy_path(tree, root, loader)
    return sorted(added)


def copy_path(tree: Tree, root: Path, guest: str | PurePosixPath) -> None:
    """Copy one guest path (file or symlink chain, targets included) from ``root`` to the tree."""
    guest = PurePosixPath(str(guest).lstrip("/"))
    for _ in range(16):
        host = root / guest
        if host.is_symlink():
            target = os.readlink(host)
            tree.symlink(guest, target)
            base = (
                PurePosixPath("/") if target.startswith("/") else PurePosixPath("/") / guest.parent
            )
            guest = PurePosixPath(os.path.normpath(str(base / target)).lstrip("/"))
            continue
        if not host.is_file():
            raise ImageError(f"{guest} missing from the extracted packages")
        tree.file(guest, host.read_bytes(), host.stat().st_mode & 0o777)
        return
    raise ImageError(f"symlink loop at {guest}")


def add_python(
    tree: Tree, root: Path, agent_root: Path, allowlist: list[str], work: Path
) -> dict[str, object]:
    """Add interpreter, traced stdlib (as .pyc), extensions and libs; return a summary."""
    agent_dir = agent_root / "farm"  # the agent and GUEST_EXTRAS
    agent_files = sorted(p for p in agent_dir.rglob("*.py") if "__pycache__" not in p.parts)
    agent_modules = [
        ".".join(p.relative_to(agent_root).with_suffix("").parts).removesuffix(".__init__")
        for p in agent_files
        if p.name != "__main__.py"
    ]
    scanned = {n for n in source_imports(agent_files) if not n.startswith("farm")}
    modules = trace_modules(root, agent_root, agent_modules, allowlist, scanned)
    stdlib_host = root / STDLIB
    jobs: list[tuple[Path, Path, str]] = []
    extensions: list[PurePosixPath] = []
    shipped: list[str] = []
    pyc_root = work / "pyc"
    for name, file in sorted(modules.items()):
        if not file or not Path(file).is_relative_to(stdlib_host):
            continue
        rel = Path(file).relative_to(stdlib_host)
        guest = STDLIB / rel.as_posix()
        if rel.suffix == ".py":
            dst = pyc_root / rel.with_suffix(".pyc")
            dst.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((Path(file), dst, str("/" / guest)))
        elif rel.suffix == ".so":
            copy_path(tree, root, guest)
            extensions.append(guest)
        shipped.append(name)
    compile_sources(root, jobs, optimize=STDLIB_OPTIMIZE, lean=True)
    for _src, dst, guest_name in jobs:
        tree.file(PurePosixPath(guest_name).with_suffix(".pyc"), dst.read_bytes())
    copy_path(tree, root, f"usr/bin/{PY}")
    tree.symlink("usr/bin/python3", PY)
    tree.dir(STDLIB / "lib-dynload")
    libs = add_libraries(tree, root, [PurePosixPath(f"usr/bin/{PY}"), *extensions])
    log.info(
        "python runtime: %d modules, %d extensions, libs %s", len(shipped), len(extensions), libs
    )
    return {"modules": len(shipped), "extensions": [e.name for e in extensions], "libs": libs}


#: Host modules the guest gets too: the fake Genode dom0 (kernel argument farm.dom0=fake).
GUEST_EXTRAS = (
    "farm/errors.py",
    "farm/events.py",
    "farm/session/fake_dom0.py",
    "farm/session/genode_wire.py",
    "farm/session/simulate.py",
)


def add_agent(tree: Tree, root: Path, agent_dir: Path, work: Path) -> list[str]:
    """Copy the agent (``farm/agent/**.py``) as sources plus pycs under /opt/farm; return names."""
    stage = work / "agent"
    (stage / "farm").mkdir(parents=True, exist_ok=True)
    (stage / "farm" / "__init__.py").write_text("")
    copied = ["farm/__init__.py"]
    for src in sorted(agent_dir.rglob("*.py")):
        if "__pycache__" in src.parts:
            continue
        rel = Path("farm/agent") / src.relative_to(agent_dir)
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(src.read_bytes())
        copied.append(rel.as_posix())
    (stage / "farm" / "session").mkdir(exist_ok=True)  # GUEST_EXTRAS: no package __init__
    (stage / "farm" / "session" / "__init__.py").write_text("")
    for rel_str in ("farm/session/__init__.py", *GUEST_EXTRAS):
        if rel_str != "farm/session/__init__.py":
            (stage / rel_str).write_bytes((agent_dir.parent.parent / rel_str).read_bytes())
        copied.append(rel_str)
    jobs = []
    for rel_str in copied:
        rel = Path(rel_str)
        pyc = rel.parent / "__pycache__" / f"{rel.stem}.cpython-311.pyc"
        (stage / pyc).parent.mkdir(parents=True, exist_ok=True)
        jobs.append((stage / rel, stage / pyc, f"/opt/farm/{rel.as_posix()}"))
    compile_sources(root, jobs)
    for src, pyc, guest in jobs:
        tree.file(guest, src.read_bytes())
        tree.file(PurePosixPath(guest).parent / "__pycache__" / pyc.name, pyc.read_bytes())
    return copied


def host_python_ok() -> bool:
    """True if this host can run the guest's x86-64 python (needed to trace and compile)."""
    return sys.platform == "linux" and os.uname().machine == "x86_64"
