"""The NetJobs configuration grammar (seed 003), parsed exactly as NetJobs documents it.

::

    # comment lines start with '#'
    LABEL:                          a test block starts (alphanumeric label, colon)
    -generaltimeout: 5m             optional, before any target: default target timeout
    -minhosts: all | N              optional, before any target (default all)
    TARGET: "COMMAND"               one line per command; TARGET is host, host:port
    -timeout: 30s                   or a farm machine name; optional -timeout right after
    -agent: netjobs                 farm extension, optional: before any target (the whole
                                    test) or right after one: a stock NetJobsAgent.py
    end                             the block ends

Durations: a non-negative number with ``s``, ``m`` or ``h`` (``330s``, ``1.5m``),
or ``none`` (wait indefinitely, the default). White space around the ``:``
delimiter is free. Every mistake raises :class:`NetJobsSyntaxError` naming the
file, the line and what was expected there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from farm.errors import ConfigError

ALL = "all"
_LABEL = re.compile(r"^([A-Za-z0-9_.\-]+)\s*:$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([smh])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_FLAG = re.compile(r"^-\s*([A-Za-z]+)\s*:\s*(.*)$")
_DURATION_HINT = "a duration like 30s, 5m, 1h or none"


class NetJobsSyntaxError(ConfigError):
    """A NetJobs config does not follow the grammar: names file, line and what was expected."""

    def __init__(self, file: str, line: int, expected: str, got: str | None = None) -> None:
        got_text = "" if got is None else f", got {got!r}"
        super().__init__(f"{file}:{line}: expected {expected}{got_text}")
        self.file = file
        self.line = line
        self.expected = expected
        self.got = got


@dataclass(frozen=True)
class Target:
    """One ``TARGET: "COMMAND"`` line with its effective timeout (s, None = wait forever)."""

    target: str
    command: str
    timeout: float | None
    line: int
    agent: str | None = None  # "farm" or "netjobs" (stock NetJobsAgent); None: the default


#: Agents a target can run: farm's own agent, or a stock NetJobsAgent.py.
AGENTS = ("farm", "netjobs")


@dataclass(frozen=True)
class TestBlock:
    """One ``label:`` … ``end`` block; ``minhosts`` is ``"all"`` or a count."""

    __test__ = False  # not a pytest test class, despite the name

    label: str
    targets: tuple[Target, ...]
    minhosts: int | str = ALL
    generaltimeout: float | None = None
    line: int = 0

    @property
    def required(self) -> int:
        """How many targets must not time out for the test to succeed."""
        return len(self.targets) if self.minhosts == ALL else int(self.minhosts)


@dataclass(frozen=True)
class NetJobsConfig:
    """A parsed config file: its test blocks in order."""

    path: Path | None
    tests: tuple[TestBlock, ...] = field(default_factory=tuple)


def parse_duration(text: str) -> float | None:
    """``"330s"`` -> 330.0, ``"none"`` -> None; ValueError for anything else."""
    value = text.strip().lower()
    if value == "none":
        return None
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class _Entry:
    target: str
    command: str
    line: int
    timeout: float | None = None
    inherit: bool = True  # no -timeout of its own: -generaltimeout applies
    agent: str | None = None


@dataclass
class _Block:
    label: str
    line: int
    minhosts: int | str = ALL
    minhosts_line: int = 0
    generaltimeout: float | None = None
    agent: str | None = None
    seen: set[str] = field(default_factory=set)
    targets: list[_Entry] = field(default_factory=list)
    timeout_allowed: bool = False


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tests: list[TestBlock] = []
        self.block: _Block | None = None
        self.labels: set[str] = set()

    def fail(self, line: int, expected: str, got: str | None = None) -> NetJobsSyntaxError:
        return NetJobsSyntaxError(self.source, line, expected, got)

    def feed(self, number: int, raw: str) -> None:
        text = raw.strip()
        if not text or text.startswith("#"):
            return
        if self.block is None:
            self.start_block(number, text)
        elif text == "end":
            self.end_block(number)
        elif text.startswith("-"):
            self.flag(number, text)
        else:
            self.target(number, text)

    def start_block(self, number: int, text: str) -> None:
        match = _LABEL.match(text)
        if match is None:
            raise self.fail(number, "a test label such as 'test0:' (a block starts)", text)
        label = match.group(1)
        if label == "end":
            raise self.fail(number, "a test label ('end' closes a block; none is open)", text)
        if label in self.labels:
            raise self.fail(number, f"a new test label (test {label!r} is already defined)", text)
        self.labels.add(label)
        self.block = _Block(label, number)

    def end_block(self, number: int) -> None:
        block = self.block
        assert block is not None
        if not block.targets:
            raise self.fail(number, f"a target line 'HOST: \"COMMAND\"' in test {block.label!r}")
        if block.minhosts != ALL and int(block.minhosts) > len(block.targets):
            raise self.fail(
                block.minhosts_line,
                f"-minhosts of at most {len(block.targets)} (the targets of test {block.label!r})",
                str(block.minhosts),
            )
        targets = tuple(
            Target(
                e.target,
                e.command,
                block.generaltimeout if e.inherit else e.timeout,
                e.line,
                e.agent or block.agent,
            )
            for e in block.targets
        )
        self.tests.append(
            TestBlock(block.label, targets, block.minhosts, block.generaltimeout, block.line)
        )
        self.block = None

    def flag(self, number: int, text: str) -> None:
        block = self.block
        assert block is not None
        match = _FLAG.match(text)
        if match is None:
            raise self.fail(number, "a flag '-NAME: VALUE'", text)
        name, value = match.group(1).lower(), match.group(2).strip()
        if name == "agent":
            agent = value.lower()
            if agent not in AGENTS:
                raise self.fail(number, "-agent value 'farm' or 'netjobs'", value)
            owner = block.targets[-1] if block.targets else block  # flags follow a target
            if owner.agent is not None:
                raise self.fail(number, "a target line (-agent is already set)", text)
            owner.agent = agent
            return
        if name in ("generaltimeout", "minhosts"):
            if block.targets:
                raise self.fail(number, f"a target line (-{name} goes before any target)", text)
            if name in block.seen:
                raise self.fail(number, f"a target line (-{name} is already set)", text)
            block.seen.add(name)
            if name == "generaltimeout":
                block.generaltimeout = self.duration(number, value)
            else:
                block.minhosts = self.minhosts(number, value)
                block.minhosts_line = number
        elif name == "timeout":
            if not block.timeout_allowed:
                raise self.fail(number, "-timeout only right after a target line", text)
            block.targets[-1].timeout = self.duration(number, value)
            block.targets[-1].inherit = False
            block.timeout_allowed = False
        else:
            raise self.fail(number, "-generaltimeout, -minhosts, -timeout or -agent", text)

    def duration(self, number: int, value: str) -> float | None:
        try:
            return parse_duration(value)
        except ValueError:
            raise self.fail(number, _DURATION_HINT, value) from None

    def minhosts(self, number: int, value: str) -> int | str:
        if value.lower() == ALL:
            return ALL
        if not value.isdigit():
            raise self.fail(number, "-minhosts value 'all' or a non-negative integer", value)
        return int(value)

    def target(self, number: int, text: str) -> None:
        block = self.block
        assert block is not None
        quote_at = min((i for i in (text.find('"'), text.find("'")) if i >= 0), default=-1)
        if quote_at < 0:
            raise self.fail(number, "a target line 'TARGET: \"COMMAND\"' (quoted command)", text)
        head, command = text[:quote_at].rstrip(), text[quote_at:]
        if not head.endswith(":"):
            raise self.fail(number, "':' between the target and its quoted command", text)
        target = head[:-1].strip()
        if not target or any(c.isspace() for c in target):
            raise self.fail(number, "a target (host, host:port or machine name) before ':'", text)
        quote = command[0]
        if len(command) < 2 or not command.endswith(quote):
            raise self.fail(number, f"the command to end with its closing quote {quote}", text)
        command = command[1:-1]
        if not command.strip():
            raise self.fail(number, "a non-empty command between the quotes", text)
        if "\0" in command:
            raise self.fail(number, "a command without NUL characters (it cannot be run)", text)
        block.targets.append(_Entry(target, command, number))
        block.timeout_allowed = True

    def finish(self, last_line: int) -> tuple[TestBlock, ...]:
        if self.block is not None:
            raise self.fail(
                last_line + 1,
                f"'end' closing test {self.block.label!r} (opened at line {self.block.line})",
                "end of file",
            )
        if not self.tests:
            raise self.fail(max(last_line, 1), "at least one test block 'label:' ... 'end'")
        return tuple(self.tests)


def parse_text(text: str, source: str = "<string>") -> tuple[TestBlock, ...]:
    """Parse config text; ``source`` names it in errors."""
    parser = _Parser(source)
    lines = text.splitlines()
    for number, raw in enumerate(lines, start=1):
        parser.feed(number, raw)
    return parser.finish(len(lines))


def parse_file(path: str | Path) -> NetJobsConfig:
    """Parse a config file; ConfigError if unreadable, NetJobsSyntaxError if malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read NetJobs config {path}: {exc}") from exc
    return NetJobsConfig(path, parse_text(text, str(path)))
