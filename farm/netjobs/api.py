"""The NetJobs Python API: parse a config, run (or simulate) its tests, report them.

::

    from farm.netjobs import run_config
    results = run_config("tests.cfg", monitor=SqliteMonitor("results.db"), log_results=True)
    all(r.passed for r in results)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from farm.config import FarmConfig
from farm.netjobs.client import FarmAgentLink
from farm.netjobs.grammar import NetJobsConfig, parse_file
from farm.netjobs.log import write_log
from farm.netjobs.monitor import report_to_monitor
from farm.netjobs.runner import Connect, Narrate, TestResult, TestRunner, simulate
from farm.netjobs.targets import Address, MachineLister, Resolver, control_lister
from farm.session.token import resolve_token

log = logging.getLogger(__name__)


def run_config(
    config: str | Path | NetJobsConfig,
    *,
    simulate_only: bool = False,
    log_results: bool = False,
    monitor: Any = None,
    narrate: Narrate | None = None,
    on_result: Callable[[TestResult], None] | None = None,
    token: str | None = None,
    port: int | None = None,
    farm_config: FarmConfig | None = None,
    connect: Connect | None = None,
    machines: MachineLister | None = None,
    connect_timeout: float = 10.0,
) -> list[TestResult]:
    """Run every test of ``config`` in order; return their results.

    ``simulate_only``: no network, statuses simulated. ``log_results``: a log
    file per test beside the config. ``monitor``: any farm monitor, given each
    test as a task set. ``on_result`` is called after each test (the CLI
    prints there). ``token``/``port`` default to the farm config's; machine
    names are looked up in the running farm of ``farm_config.state_dir``.
    Raises ConfigError (NetJobsSyntaxError) before anything runs.
    """
    parsed = config if isinstance(config, NetJobsConfig) else parse_file(config)
    cfg = farm_config or FarmConfig.load()
    results: list[TestResult] = []
    runner: TestRunner | None = None
    if not simulate_only:
        secret = resolve_token(token or cfg.token, cfg.state_dir)

        def dial(address: Address) -> FarmAgentLink:
            return FarmAgentLink(address, secret, connect_timeout)

        resolver = Resolver(port or cfg.agent_port, machines or control_lister(cfg.state_dir))
        runner = TestRunner(connect or dial, resolver, narrate=narrate)
    for test in parsed.tests:
        result = simulate(test) if runner is None else runner.run(test)
        results.append(result)
        if log_results and parsed.path is not None:
            path = write_log(parsed.path, result)
            if narrate is not None:
                narrate(f"test {test.label}: log written to {path}")
        if monitor is not None:
            report_to_monitor(monitor, result)
        if on_result is not None:
            on_result(result)
    return results
