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
from farm.errors import ConfigError
from farm.netjobs.client import FarmAgentLink
from farm.netjobs.grammar import AGENTS, NetJobsConfig, parse_file
from farm.netjobs.log import write_log
from farm.netjobs.monitor import report_to_monitor
from farm.netjobs.runner import Connect, Narrate, TestResult, TestRunner, simulate
from farm.netjobs.stock import STOCK_PORT, StockAgentLink
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
    agent: str = "farm",
    stock_connect: Connect | None = None,
) -> list[TestResult]:
    """Run every test of ``config`` in order; return their results.

    ``simulate_only``: no network, statuses simulated. ``log_results``: a log
    file per test beside the config. ``monitor``: any farm monitor, given each
    test as a task set. ``on_result`` is called after each test (the CLI
    prints there). ``token``/``port`` default to the farm config's; machine
    names are looked up in the running farm of ``farm_config.state_dir``.
    ``agent``: what targets without ``-agent:`` run, ``"farm"`` or ``"netjobs"``
    (a stock, unauthenticated NetJobsAgent.py on port 16192 unless ``host:port``).
    Raises ConfigError (NetJobsSyntaxError) before anything runs.
    """
    if agent not in AGENTS:
        raise ConfigError(f"agent must be one of {', '.join(AGENTS)}, got {agent!r}")
    parsed = config if isinstance(config, NetJobsConfig) else parse_file(config)
    cfg = farm_config or FarmConfig.load()
    results: list[TestResult] = []
    runner: TestRunner | None = None
    if not simulate_only:
        secret = resolve_token(token or cfg.token, cfg.state_dir)

        def dial(address: Address) -> FarmAgentLink:
            return FarmAgentLink(address, secret, connect_timeout)

        def dial_stock(address: Address) -> StockAgentLink:
            return StockAgentLink(address, connect_timeout)

        lister = machines or control_lister(cfg.state_dir)
        resolver = Resolver(port or cfg.agent_port, lister)
        stock = (stock_connect or dial_stock, Resolver(port or STOCK_PORT, lister))
        runner = TestRunner(
            connect or dial, resolver, narrate=narrate, stock=stock, default_agent=agent
        )
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
