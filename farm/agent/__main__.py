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

SIGTERM / SIGINT stop every job, close all connections and exit with 0.
Exit status 1: the port could not be bound.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from farm.agent import protocol
from farm.agent.server import AUTH_TIMEOUT, MAX_CONNECTIONS, AgentServer, make_stop_pipe
from farm.agent.service import AgentService

log = logging.getLogger("farm.agent")

EXIT_OK, EXIT_BIND, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m farm.agent", description="farm guest agent")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = all)")
    p.add_argument("--port", type=int, default=protocol.DEFAULT_PORT, help="0 = any free port")
    p.add_argument("--token", help="shared secret (prefer --token-file or FARM_TOKEN)")
    p.add_argument("--token-file", type=Path, help="file holding the token")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    p.add_argument("--auth-timeout", type=float, default=AUTH_TIMEOUT)
    return p


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from the flag, else the file, else FARM_TOKEN; None if there is none."""
    if token:
        return token.strip() or None
    if token_file is not None:
        return token_file.read_text().strip() or None
    return os.environ.get("FARM_TOKEN", "").strip() or None


def write_port_file(path: Path, port: int) -> None:
    """Write the port atomically (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        token = resolve_token(args.token, args.token_file)
    except OSError as exc:
        sys.stderr.write(f"farm-agent: cannot read token file: {exc}\n")
        return EXIT_USAGE
    if token is None:
        sys.stderr.write(
            "farm-agent: no token (give --token, --token-file or FARM_TOKEN); "
            "refusing to start: no token, no service\n"
        )
        return EXIT_USAGE
    if args.heartbeat < 0 or args.auth_timeout <= 0 or args.max_connections < 1:
        sys.stderr.write("farm-agent: --heartbeat, --auth-timeout, --max-connections invalid\n")
        return EXIT_USAGE
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop_r, stop_w = make_stop_pipe()

    def on_signal(signo: int, frame: object) -> None:
        try:
            os.write(stop_w, b"x")
        except OSError:
            pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with tempfile.TemporaryDirectory(prefix="farm-agent-") as workdir:
        service = AgentService(Path(workdir))
        try:
            server = AgentServer(
                service,
                token,
                host=args.host,
                port=args.port,
                heartbeat=args.heartbeat,
                max_connections=args.max_connections,
                auth_timeout=args.auth_timeout,
            )
        except OSError as exc:
            sys.stderr.write(f"farm-agent: cannot listen on {args.host}:{args.port}: {exc}\n")
            return EXIT_BIND
        host, port = server.address
        try:
            if args.port_file is not None:
                write_port_file(args.port_file, port)
            sys.stdout.write(f"farm-agent listening on {host}:{port} version {service.version}\n")
            sys.stdout.flush()
            log.info("listening on %s:%d (pid %d)", host, port, os.getpid())
            server.serve_forever(stop_r)
            log.info("stopping")
        finally:
            service.shutdown()
            server.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
