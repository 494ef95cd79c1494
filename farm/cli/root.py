"""The root ``farm`` group: global options, lazy subcommands, errors mapped to exit codes."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from farm.cli.console import console
from farm.cli.errors import EXIT_INTERRUPTED, fail, internal_error, usage_error
from farm.cli.image import image
from farm.cli.listing import list_
from farm.cli.run import run
from farm.errors import FarmError
from farm.logfilter import rate_limit

# Subcommands imported only when invoked so that ``farm --help`` and
# ``farm run`` stay fast: name -> "module:attribute".
_LAZY_COMMANDS = {
    "net": "farm.cli.net:net",
    "netjobs": "farm.cli.netjobs:netjobs",
    "report": "farm.cli.report:report",
    "doctor": "farm.cli.doctor:doctor",
    "status": "farm.cli.status:status",
}


def _load_lazy(name: str) -> click.Command:
    module, _, attr = _LAZY_COMMANDS[name].partition(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command), f"{_LAZY_COMMANDS[name]} is not a click command"
    return cmd


class _LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; errors that escape it become one line and exit 1 or 2."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's arguments
            if isinstance(exc, click.exceptions.NoArgsIsHelpError):
                raise
            usage_error(exc)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # `farm list | head -3`: the reader left; click exits quietly
            raise
        except KeyboardInterrupt:
            click.echo("farm: interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except FarmError as exc:
            fail(exc)
        except Exception as exc:  # a bug: say so in one line, the traceback with -d
            internal_error(exc)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """The root's context; its usage errors (unknown command, bad option) as one line."""
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            if isinstance(exc, click.exceptions.NoArgsIsHelpError):
                raise
            usage_error(exc)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            return _load_lazy(cmd_name)
        return super().get_command(ctx, cmd_name)


def terminal_handler() -> logging.Handler:
    """Log lines for stderr: rich's handler on a terminal, so that they print above
    ``farm run``'s live view instead of through it; plain ``LEVEL name: msg`` otherwise."""
    import sys

    if not sys.stderr.isatty():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        return handler
    from rich.console import Console
    from rich.logging import RichHandler

    rich = RichHandler(console=Console(stderr=True), show_time=False, show_path=False)
    rich.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return rich


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="farm.toml to use.")
@click.option("-d", "--debug", is_flag=True, help="Full traceback on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, config_path: str | None, debug: bool) -> None:
    """farm: run real-time task-set experiments on a farm of QEMU guests.

    Exit codes: 0 ok, 1 failure (e.g. a set given up), 2 bad input, 130 interrupted.
    """
    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    handler = terminal_handler()
    handler.setLevel(level)  # the farm logger may be more verbose (its log file is)
    rate_limit(handler)
    logging.getLogger().addHandler(handler)
    ctx.obj = {"config": config_path, "debug": debug}


for _command in (run, image, console, list_):
    main.add_command(_command)
