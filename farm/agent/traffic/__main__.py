"""``python -m farm.agent.traffic server|client --key value ...``: run a traffic workload."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable

from farm.agent.traffic import EXIT_USAGE, TrafficConfigError
from farm.agent.traffic.client import run_client
from farm.agent.traffic.config import CLIENT_KEYS, SERVER_KEYS, client_config, server_config
from farm.agent.traffic.dist import number
from farm.agent.traffic.server import run_server


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m farm.agent.traffic", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("server", help="accept clients, sink or echo their messages")
    cli = sub.add_parser("client", help="send messages to servers, print statistics")
    for parser, keys in ((srv, SERVER_KEYS), (cli, CLIENT_KEYS)):
        for key in keys:
            parser.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="V")
    return p


def _typed(key: str, text: str | None) -> object:
    if text is None or key in ("servers", "cidr", "size", "think", "mode", "host"):
        return text
    try:
        return int(text)
    except ValueError:
        return text if key in ("port", "count", "seed") else number(text, f"--{key}")


def stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGTERM/SIGINT set ``stop``; return what puts the previous handlers back.

    The handler only writes a byte to a pipe and a thread sets the event: a handler
    runs in the main thread between two bytecodes, maybe while that thread holds
    the event's own lock (inside ``stop.wait()``), so ``stop.set()`` there could
    deadlock and leave the job deaf to every later signal (seen as a stop that
    waited out its whole grace).
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def poke(signo: int, frame: object) -> None:
        try:
            os.write(write_fd, b"x")
        except OSError:  # full (a poke is pending anyway) or closed
            pass

    def relay() -> None:
        try:
            if os.read(read_fd, 1):
                stop.set()
        finally:
            os.close(read_fd)

    threading.Thread(target=relay, name="traffic-signals", daemon=True).start()
    previous = {signo: signal.signal(signo, poke) for signo in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for signo, handler in previous.items():
            signal.signal(signo, handler)
        os.close(write_fd)  # the relay sees end of file and ends

    return restore


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> int:
    """Run a server or client from the command line; return the exit status."""
    args = vars(_parser().parse_args(argv))
    role = args.pop("role")
    try:
        raw = {k: _typed(k, v) for k, v in args.items() if v is not None}
        if role == "server" and "port" not in raw:
            raw["port"] = None
        cfg = (server_config if role == "server" else client_config)(raw)
    except TrafficConfigError as exc:
        print(f"traffic: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    try:
        (run_server if role == "server" else run_client)(cfg, stop, sys.stdout)
    except OSError as exc:
        print(f"traffic {role}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
