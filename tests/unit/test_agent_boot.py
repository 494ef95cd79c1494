"""The agent's boot-time mechanisms: a listening socket handed over, the first set's preload."""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import pytest

from farm.agent import logs
from farm.agent import service as service_mod
from farm.agent.__main__ import _parse_fast, _parser, parse_args
from farm.agent.protocol import client_handshake
from farm.agent.server import AgentServer, make_stop_pipe
from farm.agent.service import AgentService, RequestError
from farm.resources import image_recipe_dir

INIT = image_recipe_dir() / "init.sh.in"


def test_listen_fd_is_parsed_like_argparse_does() -> None:
    argv = ["--listen-fd", "7", "--token", "t", "--port", "3001"]
    fast = _parse_fast(argv)
    assert fast is not None and fast.listen_fd == 7
    assert vars(fast) == vars(_parser().parse_args(argv))
    assert parse_args(["--token", "t"]).listen_fd is None


def test_a_client_connecting_before_the_server_exists_is_served(tmp_path: Path) -> None:
    """What /init does: bind first, import the agent, hand it the socket (--listen-fd)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    early = socket.create_connection(("127.0.0.1", port), timeout=10)  # waits in the backlog
    service = AgentService(tmp_path)
    server = AgentServer(service, "tok", listen_fd=listener.detach())
    stop_r, stop_w = make_stop_pipe()
    loop = threading.Thread(target=server.serve_forever, args=(stop_r,), daemon=True)
    loop.start()
    try:
        assert server.address == ("127.0.0.1", port)
        channel = client_handshake(early, "tok")
        assert channel.hello["type"] == "hello"
    finally:
        early.close()
        os.write(stop_w, b"x")
        loop.join(10)
        server.close()
        service.shutdown()
    assert not loop.is_alive()


def test_init_binds_the_socket_before_it_imports_the_agent() -> None:
    text = INIT.read_text()
    match = re.search(r"python3 \$PYFLAGS -c '(.*?)' \\\n", text, re.S)
    assert match, "the agent's start in init.sh.in changed shape"
    program = match.group(1)
    assert program.index("s.listen(") < program.index("from farm.agent")
    assert '"--listen-fd", str(s.detach())' in program
    assert "import socket" not in program  # _socket: socket.py costs imports before the bind


class _Client:
    name = "c"

    def send(self, message: object) -> None:
        pass


def test_preload_makes_the_workdir_and_releases_logs_even_if_the_machinery_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise ImportError("no machinery here")

    _join_leftover_preloads()
    monkeypatch.setattr(service_mod, "load_machinery", broken)
    released: list[bool] = []
    me = threading.get_ident()  # a preload thread left by an earlier test may release too
    monkeypatch.setattr(logs, "release", lambda: released.append(threading.get_ident() == me))
    service = AgentService(tmp_path / "work")
    service_mod._after_first_handshake(service)
    assert service._preloaded.is_set() and released.count(True) == 1
    assert not (tmp_path / "work" / "jobs").exists()  # failed before the work directory

    monkeypatch.setattr(service_mod, "load_machinery", lambda: None)
    service = AgentService(tmp_path / "work2")
    service_mod._after_first_handshake(service)
    assert (tmp_path / "work2" / "jobs").is_dir()
    service.shutdown()


def _join_leftover_preloads() -> None:
    """Let preload threads of earlier tests end (one may release the logs meanwhile)."""
    for thread in threading.enumerate():
        if thread.name == "preload" and thread is not threading.current_thread():
            thread.join(30)


def test_first_start_waits_for_the_preload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _join_leftover_preloads()
    gate = threading.Event()
    monkeypatch.setattr(service_mod, "load_machinery", gate.wait)
    service = AgentService(tmp_path)
    client = _Client()
    service.attach(client)  # starts the preload thread, blocked on the gate
    outcome: list[str] = []

    def start_bad_set() -> None:
        try:
            service.handle(client, "start", {"tasks": "bad"})
        except RequestError as exc:
            outcome.append(exc.code)

    start = threading.Thread(target=start_bad_set, daemon=True)
    start.start()
    start.join(0.3)
    assert start.is_alive() and not outcome  # waiting for the preload, not validating yet
    gate.set()
    start.join(10)
    assert not start.is_alive() and outcome == ["invalid_taskset"]  # then it went on
    service.shutdown()


def test_first_client_starts_the_start_up_work_with_the_machinery_loaded_already(
    tmp_path: Path,
) -> None:
    """A restored guest's agent loaded it in its template (farm.agent.warmup): its first
    client still gets the work directory and the held logs, and ``start`` never waits
    for a start-up thread that was not started."""
    _join_leftover_preloads()
    service_mod.load_machinery()
    service = AgentService(tmp_path / "work")
    try:
        service.attach(_Client())
        assert service._preloaded.wait(10), "no start-up work for the first client"
        assert (tmp_path / "work" / "jobs").is_dir()
    finally:
        service.shutdown()


def test_status_lists_the_warm_up_sets_of_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm.agent import warmup

    service = AgentService(tmp_path)
    monkeypatch.setattr(warmup, "history", [])
    assert service.handle(_Client(), "status", {}).result["warm_up"] == []
    monkeypatch.setattr(warmup, "history", [["START", "EXIT", "JOBS_DONE"]])
    assert service.handle(_Client(), "status", {}).result["warm_up"] == [
        ["START", "EXIT", "JOBS_DONE"]
    ]
    service.shutdown()


def _identity_program() -> str:
    """The Python program of /init's identity modes (wait, boot)."""
    match = re.search(r"python3 -S -c '(\nimport .*?)' \"\$IDENTITY\"", INIT.read_text(), re.S)
    assert match, "the identity program of init.sh.in changed shape"
    return match.group(1)


def test_the_identity_program_of_init_is_valid_python() -> None:
    """It sits in single quotes in a shell script: one apostrophe in it ends it."""
    program = _identity_program()
    assert "'" not in program
    compile(program, "init.sh.in", "exec")


def test_the_warm_start_template_warms_up_and_makes_the_workdir_before_it_is_saved() -> None:
    program = _identity_program()
    start = program.index('if mode == "wait":')
    waiting = program.index('b"farm-identity: waiting')
    assert start < program.index("warmup.run()", start) < waiting
    assert start < program.index('sys.argv += ["--workdir", workdir]', start) < waiting


def test_workdir_is_parsed_like_argparse_does(tmp_path: Path) -> None:
    argv = ["--token", "t", "--workdir", str(tmp_path)]
    fast = _parse_fast(argv)
    assert fast is not None and fast.workdir == tmp_path
    assert vars(fast) == vars(_parser().parse_args(argv))
    assert parse_args(["--token", "t"]).workdir is None


def test_the_warm_up_task_has_every_field_the_host_sends() -> None:
    """So the template's warm-up goes through the same validation as a real first set."""
    from farm.agent import warmup
    from farm.session.base import task_descriptions
    from farm.taskset import Task, TaskSet

    sent = task_descriptions(TaskSet([Task({"pkg": "hey", "numberofjobs": 1})]))[0]
    assert set(warmup.TASKS[0]) == set(sent)


def test_the_warm_start_template_preloads_what_the_lean_identity_start_left_out() -> None:
    """Cold boots import _socket and wirejson only; a template has the full modules in its
    snapshot, so no restored guest imports them after its restore (~50 ms of TCG each spawn)."""
    program = _identity_program()
    start = program.index('if mode == "wait":')
    preload = program[start : program.index("jobs.preload()", start)]
    for module in ("json", "re", "selectors", "socket"):
        assert re.search(rf"\b{module}\b", preload), module
