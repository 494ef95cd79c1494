"""Runs one NetJobs test: prepare every target, start all commands together, collect.

1. Prepare (in parallel): resolve the target, connect and authenticate, and
   measure the agent's clock offset (NTP-style, best of several samples).
   With ``-minhosts: all`` a target that cannot be prepared aborts the test
   before anything starts.
2. Start: one host instant ``T`` a little ahead (lead + twice the worst RTT);
   each agent gets ``T`` translated into its own clock and starts its command
   then. The measured start skew is the spread of the agents' recorded start
   instants, each translated back into host time with its offset.
3. Collect: each target's output is read whole, in chunks, while it runs. A
   target's timeout is enforced by its agent (and, as a backstop, here). As
   soon as more targets failed (timed out, or lost) than minhosts allows, the
   test is over and every command still running is killed (KILLED).

A test passes when at least ``minhosts`` targets returned their command's exit
status (SUCCESS or ERROR) rather than timing out (seed 003, as documented).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from farm.errors import ConfigError, FarmError
from farm.netjobs.client import CLOCK_SAMPLES, AgentLink
from farm.netjobs.grammar import ALL, Target, TestBlock
from farm.netjobs.stock import WARNING as STOCK_WARNING
from farm.netjobs.targets import Address, Resolver

log = logging.getLogger(__name__)

Narrate = Callable[[str], None]
Connect = Callable[[Address], AgentLink]


class Status(StrEnum):
    """How a target's command ended."""

    SUCCESS = "SUCCESS"  # exit status 0
    ERROR = "ERROR"  # non-zero exit status, or it could not be run / the agent was lost
    TIMEOUT = "TIMEOUT"  # still running at its timeout: killed
    KILLED = "KILLED"  # killed (or never started) because the test was aborted


@dataclass
class TargetResult:
    """One target line's outcome; times are host monotonic seconds."""

    target: str
    command: str
    timeout: float | None
    address: str | None = None
    status: Status | None = None
    exit_code: int | None = None
    output: str = ""
    detail: str | None = None
    offset: float | None = None
    rtt: float | None = None
    started: float | None = None
    started_wall: float | None = None
    ended: float | None = None

    @property
    def returned(self) -> bool:
        """True if the command ran to its own end (it counts towards minhosts)."""
        return self.status in (Status.SUCCESS, Status.ERROR) and self.exit_code is not None

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass
class TestResult:
    """One test block's outcome."""

    __test__ = False  # not a pytest test class, despite the name

    label: str
    minhosts: int | str
    required: int
    results: list[TargetResult]
    start_at: float | None = None
    skew: float | None = None
    aborted: str | None = None
    began_wall: float = field(default_factory=time.time)
    ended_wall: float | None = None
    simulated: bool = False

    @property
    def returned(self) -> int:
        """Targets whose command returned an exit status."""
        return sum(r.returned for r in self.results)

    @property
    def passed(self) -> bool:
        """At least minhosts targets did not time out (and returned)."""
        return self.returned >= self.required


@dataclass
class _Slot:
    spec: Target
    result: TargetResult
    link: AgentLink | None = None


class TestRunner:
    """Runs test blocks against real (or, in unit tests, fake) agents."""

    __test__ = False

    def __init__(
        self,
        connect: Connect,
        resolver: Resolver,
        *,
        narrate: Narrate | None = None,
        lead: float = 0.25,
        poll_wait: float = 0.5,
        backstop: float = 5.0,
        clock_samples: int = CLOCK_SAMPLES,
        stock: tuple[Connect, Resolver] | None = None,
        default_agent: str = "farm",
    ) -> None:
        """``lead``: s between the start decision and the start; ``backstop``: host grace.

        ``stock``: how to reach targets whose agent is a stock NetJobsAgent
        (``-agent: netjobs``, or ``default_agent = "netjobs"``).
        """
        self.connect = connect
        self.resolver = resolver
        self.stock = stock
        self.default_agent = default_agent
        self.narrate = narrate or (lambda text: None)
        self.lead = lead
        self.poll_wait = poll_wait
        self.backstop = backstop
        self.clock_samples = clock_samples

    def _say(self, text: str) -> None:
        log.info("%s", text)
        self.narrate(text)

    def run(self, test: TestBlock) -> TestResult:
        """Run one test block to its end; every connection is closed on return."""
        slots = [_Slot(t, TargetResult(t.target, t.command, t.timeout)) for t in test.targets]
        result = TestResult(test.label, test.minhosts, test.required, [s.result for s in slots])
        self._say(f"test {test.label}: preparing {len(slots)} target(s)")
        try:
            with ThreadPoolExecutor(max_workers=len(slots)) as pool:
                list(pool.map(self._prepare, slots))
            ready = [s for s in slots if s.link is not None]
            failed = len(slots) - len(ready)
            if failed and (test.minhosts == ALL or len(ready) < test.required):
                result.aborted = f"{failed} target(s) could not be prepared"
                for slot in ready:
                    slot.result.status = Status.KILLED
                    slot.result.detail = "not started: test aborted (targets not prepared)"
            elif ready:
                self._start_and_collect(test, ready, result)
        finally:
            for slot in slots:
                if slot.link is not None:
                    try:
                        slot.link.close()
                    except Exception:
                        log.exception("closing the link to %s failed", slot.spec.target)
            result.ended_wall = time.time()
        starts = [r.started for r in result.results if r.started is not None]
        result.skew = max(starts) - min(starts) if starts else None
        verdict = "passed" if result.passed else "FAILED"
        self._say(
            f"test {test.label}: {verdict} ({result.returned}/{len(slots)} returned, "
            f"minhosts {test.minhosts})"
        )
        return result

    def _route(self, spec: Target) -> tuple[Resolver, Connect, bool]:
        """(resolver, connect, stock?) for a target, by its agent kind."""
        if (spec.agent or self.default_agent) != "netjobs":
            return self.resolver, self.connect, False
        if self.stock is None:
            raise ConfigError(f"target {spec.target!r}: no way to reach stock NetJobsAgents")
        return self.stock[1], self.stock[0], True

    def _prepare(self, slot: _Slot) -> None:
        target = slot.spec.target
        try:
            resolver, connect, stock = self._route(slot.spec)
            address = resolver.resolve(target)
            slot.result.address = str(address)
            if stock:
                warning = STOCK_WARNING.format(target=target, address=address)
                log.warning("%s", warning)
                self.narrate(warning)
            link = connect(address)
        except FarmError as exc:
            slot.result.status, slot.result.detail = Status.ERROR, f"not prepared: {exc}"
            self._say(f"  {target}: cannot prepare: {exc}")
            return
        try:
            slot.result.offset, slot.result.rtt = link.clock(self.clock_samples)
        except FarmError as exc:
            link.close()
            slot.result.status, slot.result.detail = Status.ERROR, f"not prepared: {exc}"
            self._say(f"  {target}: clock measurement failed: {exc}")
            return
        slot.link = link
        self._say(
            f"  {target} ({address}): ready, clock offset {slot.result.offset:+.6f} s, "
            f"rtt {slot.result.rtt * 1e3:.3f} ms"
        )

    def _start_and_collect(self, test: TestBlock, ready: list[_Slot], result: TestResult) -> None:
        worst_rtt = max(s.result.rtt or 0.0 for s in ready)
        start_at = time.monotonic() + self.lead + 2 * worst_rtt
        result.start_at = start_at
        ahead = start_at - time.monotonic()
        self._say(f"test {test.label}: starting {len(ready)} command(s) in {ahead:.3f} s")
        abort = threading.Event()
        done: queue.Queue[_Slot] = queue.Queue()
        threads = [
            threading.Thread(
                target=self._watch, args=(slot, start_at, abort, done), name=f"netjobs-{i}"
            )
            for i, slot in enumerate(ready)
        ]
        for thread in threads:
            thread.start()
        allowed = len(test.targets) - test.required
        failures = sum(1 for r in result.results if r.status is not None)  # not prepared
        try:
            for _ in ready:
                slot = done.get()
                res = slot.result
                self._say(f"  {res.target}: {res.status} {res.detail or ''}".rstrip())
                if not res.returned and res.status is not Status.KILLED:
                    failures += 1
                    if failures > allowed and not abort.is_set():
                        result.aborted = (
                            f"{res.target} {res.status}: more than {allowed} target(s) failed "
                            f"(minhosts {test.minhosts}); killing the rest"
                        )
                        self._say(f"test {test.label}: {result.aborted}")
                        abort.set()
        finally:
            abort.set()  # all done already, or interrupted: kill what still runs
            for thread in threads:
                thread.join()

    def _watch(
        self, slot: _Slot, start_at: float, abort: threading.Event, done: queue.Queue[_Slot]
    ) -> None:
        res, link = slot.result, slot.link
        assert link is not None and res.offset is not None
        try:
            self._run_one(res, link, start_at, abort)
        except ConfigError as exc:  # e.g. a command the stock agent cannot carry
            res.status, res.detail = Status.ERROR, f"not run: {exc}"
        except FarmError as exc:
            res.status, res.detail = Status.ERROR, f"lost: {exc}"
        except Exception as exc:  # never leave the collector waiting
            log.exception("watching %s failed", res.target)
            res.status, res.detail = Status.ERROR, f"internal error: {exc}"
        finally:
            if res.status is None:
                res.status = Status.ERROR
            done.put(slot)

    def _run_one(
        self, res: TargetResult, link: AgentLink, start_at: float, abort: threading.Event
    ) -> None:
        assert res.offset is not None
        if "\0" in res.command:  # Popen would raise ValueError: say so instead
            res.status, res.detail = Status.ERROR, "command contains a NUL character: not run"
            return
        reply = link.exec(res.command, start_at + res.offset, res.timeout)
        rid = str(reply["id"])
        if reply.get("late"):
            self._say(f"  {res.target}: start request arrived late")
        output = bytearray()
        offset = 0
        kill_sent, backstop_hit = False, False
        deadline = None if res.timeout is None else start_at + res.timeout + self.backstop
        while True:
            if not kill_sent and abort.is_set():
                link.kill(rid)
                kill_sent = True
            elif not kill_sent and deadline is not None and time.monotonic() > deadline:
                self._say(f"  {res.target}: agent did not enforce its timeout; killing")
                link.kill(rid)
                kill_sent = backstop_hit = True
            state = link.poll(rid, offset, self.poll_wait)
            output += state["data"]
            offset = int(state["next_offset"])
            if state["eof"]:
                break
        res.output = output.decode("utf-8", errors="replace")
        res.exit_code = state.get("exit_code")
        res.detail = state.get("detail")
        if state.get("started") is not None:
            res.started = float(state["started"]) - res.offset
            res.started_wall = state.get("started_wall")
        if state.get("ended") is not None:
            res.ended = float(state["ended"]) - res.offset
        kind = state["state"]
        if kind == "exited":
            res.status = Status.SUCCESS if res.exit_code == 0 else Status.ERROR
            if res.exit_code != 0:
                res.detail = f"exit status {res.exit_code}"
        elif kind == "timeout" or backstop_hit:
            res.status = Status.TIMEOUT
            res.exit_code = None
        elif kind == "killed":
            res.status, res.exit_code = Status.KILLED, None
            res.detail = "killed: test aborted"
        else:
            res.status, res.exit_code = Status.ERROR, None


def simulate(test: TestBlock, resolver: Resolver | None = None) -> TestResult:
    """What would run, without any network: every command reported SUCCESS, output a note."""
    results = []
    for spec in test.targets:
        res = TargetResult(spec.target, spec.command, spec.timeout)
        res.address = spec.target
        res.status, res.exit_code = Status.SUCCESS, 0
        res.output = f"(simulated) would run on {spec.target}: {spec.command}\n"
        res.detail = "simulated"
        results.append(res)
    result = TestResult(test.label, test.minhosts, test.required, results, simulated=True)
    result.ended_wall = result.began_wall
    return result
