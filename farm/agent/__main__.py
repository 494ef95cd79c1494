"""``python -m farm.agent``: run the farm agent (stdlib only; see farm/agent/__init__.py).

Usage::

    python -m farm.agent --port P --token T [--host 127.0.0.1] [--heartbeat 1.0]
                         [--port-file FILE] [--log-level INFO]

The token comes from ``--token``, else ``--token-file``, else the
``FARM_TOKEN`` environment variable; without one the agent refuses to start
(exit status 2): no token, no service. ``--port 0`` picks a free port. Once
listening, the agent writes the port to ``--port-file`` (atomically) and
prints exactly one line to stdout::

    farm-agent listening on HOST:PORT version V

``--workdir DIR``: run jobs in DIR/jobs and keep binaries in DIR/bin (the
warm-start template makes them before it is saved: a restored guest's first
set then finds them), kept at exit.

``--listen-fd N``: serve the listening socket N, bound and listening
already (the guest's /init binds it first thing, so the host's first
connection waits in the backlog while the agent imports its modules, instead
of being refused and retried after a pause); ``--host``/``--port`` are then
ignored.

``main(argv, identity=...)`` (the guest's /init, ``farm.identity=wait|boot``): the
agent is set up first (arguments, service, listener) and only then waits for the
guest's identity, which gives the key; ``preload=True`` also does the start-up work
of the first handshake before waiting (a warm-start template: all of it is then in
the snapshot and no restored guest runs it again). Nothing is accepted before the
key is set: a client connecting earlier waits in the backlog, then needs that key.

SIGTERM / SIGINT stop every job, close all connections and exit with 0.
Exit status 1: the port could not be bound.

Start-up time matters (in a TCG guest every imported module costs
milliseconds before the first handshake): a well-formed command line is
parsed without argparse, which is only imported for anything else (``--help``,
abbreviations, errors), so behaviour and messages stay argparse's; logging is
set up after the first handshake (records made before are held, see
:mod:`farm.agent.logs`).
"""

from __future__ import annotations

import _signal  # not signal: its enum conversion of every SIG* constant costs ~10 ms in TCG
import os
import sys
from types import SimpleNamespace

from farm.agent import logs, protocol
from farm.agent.server import AUTH_TIMEOUT, MAX_CONNECTIONS, AgentServer, make_stop_pipe
from farm.agent.service import AgentService

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path

log = logs.get_logger("farm.agent")

EXIT_OK, EXIT_BIND, EXIT_USAGE = 0, 1, 2


def _path(value: str) -> Path:
    from pathlib import Path  # only when a file option is given: pathlib is slow to import

    return Path(value)


#: the command line: flag -> (default, type, help); type None = the string as given
_OPTIONS: dict[str, tuple[object, Callable[[str], object] | None, str | None]] = {
    "--host": ("127.0.0.1", None, "address to listen on (0.0.0.0 = all)"),
    "--port": (protocol.DEFAULT_PORT, int, "0 = any free port"),
    "--token": (None, None, "shared secret (prefer --token-file or FARM_TOKEN)"),
    "--token-file": (None, _path, "file holding the token (/dev/fd/N: a pipe from the host)"),
    "--guest": (None, None, "this guest's name: the token is then its key guest_key(T, name)"),
    "--heartbeat": (1.0, float, "seconds between heartbeats"),
    "--port-file": (None, _path, "write the bound port here once listening"),
    "--log-level": ("INFO", None, "DEBUG, INFO, WARNING, ERROR"),
    "--max-connections": (MAX_CONNECTIONS, int, None),
    "--auth-timeout": (AUTH_TIMEOUT, float, None),
    "--listen-fd": (None, int, "serve this listening socket (inherited) instead of binding"),
    "--workdir": (
        None,
        _path,
        "where jobs run and binaries are kept, made already (default: "
        "a private temporary directory, removed at exit)",
    ),
}


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(prog="python -m farm.agent", description="farm guest agent")
    for flag, (default, kind, text) in _OPTIONS.items():
        if kind is None:
            p.add_argument(flag, default=default, help=text)
        else:
            p.add_argument(flag, default=default, type=kind, help=text)
    return p


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _parse_fast(argv: list[str]) -> SimpleNamespace | None:
    """Parse ``--flag value`` / ``--flag=value`` with exact flag names; None for anything else.

    Whatever this refuses (help, abbreviations, values starting with "-",
    bad numbers, unknown words) goes to argparse, so the outcome is the same.
    """
    values = {_dest(flag): default for flag, (default, _, _) in _OPTIONS.items()}
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag not in _OPTIONS:
            return None
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            i += 1
            value = argv[i]
        i += 1
        kind = _OPTIONS[flag][1]
        try:
            values[_dest(flag)] = value if kind is None else kind(value)
        except ValueError:
            return None
    return SimpleNamespace(**values)


def parse_args(argv: list[str] | None = None) -> SimpleNamespace:
    """The command line as a namespace (None = ``sys.argv[1:]``); exits like argparse on errors."""
    args = sys.argv[1:] if argv is None else list(argv)
    fast = _parse_fast(args)
    if fast is not None:
        return fast
    return SimpleNamespace(**vars(_parser().parse_args(args)))


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from the flag, else the file, else FARM_TOKEN; None if there is none."""
    if token:
        return token.strip() or None
    if token_file is not None:
        return token_file.read_text().strip() or None
    # taken out of the environment we pass on (jobs never see it; /proc/PID/environ
    # still holds the start-up copy: hosts hand the key over on a pipe instead)
    return os.environ.pop("FARM_TOKEN", "").strip() or None


def write_port_file(path: Path, port: int) -> None:
    """Write the port atomically (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def main(
    argv: list[str] | None = None,
    identity: Callable[[], tuple[str, str]] | None = None,
    preload: bool = False,
) -> int:
    """Run the agent until SIGTERM/SIGINT; return the exit status.

    ``identity``: called once the agent listens, returns its (token, guest name); no
    token is needed on the command line then. ``preload``: see the module docstring.
    """
    args = parse_args(argv)
    try:
        token = resolve_token(args.token, args.token_file)
    except OSError as exc:
        sys.stderr.write(f"farm-agent: cannot read token file: {exc}\n")
        return EXIT_USAGE
    if token is None and identity is None:
        sys.stderr.write(
            "farm-agent: no token (give --token, --token-file or FARM_TOKEN); "
            "refusing to start: no token, no service\n"
        )
        return EXIT_USAGE
    if args.heartbeat < 0 or args.auth_timeout <= 0 or args.max_connections < 1:
        sys.stderr.write("farm-agent: --heartbeat, --auth-timeout, --max-connections invalid\n")
        return EXIT_USAGE
    stop_r, stop_w = make_stop_pipe()

    def on_signal(signo: int, frame: object) -> None:
        try:
            os.write(stop_w, b"x")
        except OSError:
            pass

    def signals() -> None:
        _signal.signal(_signal.SIGTERM, on_signal)
        _signal.signal(_signal.SIGINT, on_signal)

    before: Callable[[AgentService, AgentServer], None] | None = None
    if identity is None:
        signals()
    else:

        def before(service: AgentService, server: AgentServer) -> None:
            _await_identity(service, server, identity, preload, str(args.log_level))
            signals()  # (until the key is set a signal ends the process: nothing to stop)

    logs.hold(str(args.log_level))
    try:
        return _serve(args, token, stop_r, before)
    finally:
        logs.release()  # writes what is still held


def _serve(
    args: SimpleNamespace,
    token: str | None,
    stop_r: int,
    before: Callable[[AgentService, AgentServer], None] | None = None,
) -> int:
    # without --workdir a private work directory is made by the first start and
    # removed by shutdown(); a warm-start template makes it before it is saved
    service = AgentService(args.workdir)
    try:
        server = AgentServer(
            service,
            token,
            host=args.host,
            port=args.port,
            heartbeat=args.heartbeat,
            max_connections=args.max_connections,
            auth_timeout=args.auth_timeout,
            listen_fd=args.listen_fd,
            guest=args.guest,
        )
    except OSError as exc:
        sys.stderr.write(f"farm-agent: cannot listen on {args.host}:{args.port}: {exc}\n")
        return EXIT_BIND
    host, port = server.address
    try:
        if before is not None:
            before(service, server)
        if args.port_file is not None:
            write_port_file(args.port_file, port)
        sys.stdout.write(f"farm-agent listening on {host}:{port} version {service.version}\n")
        sys.stdout.flush()
        log.info("listening on %s:%d (pid %d)", host, port, os.getpid())
        server.serve_forever(stop_r, on_idle=logs.release)
        log.info("stopping")
    finally:
        service.shutdown()
        server.close()
    return EXIT_OK


def _await_identity(
    service: AgentService,
    server: AgentServer,
    identity: Callable[[], tuple[str, str]],
    preload: bool,
    log_level: str,
) -> None:
    """Set up what needs no key (``preload``: the first handshake's start-up work and
    logging too), then wait for the identity and give the server its key."""
    service.before_identity = True
    if preload:
        service.preload()  # (releases the held records: logging is set up here too)
        logs.hold(log_level)  # and holds again: the first handshake formats no record
    token, guest = identity()
    server.set_key(token, guest)


if __name__ == "__main__":
    sys.exit(main())
