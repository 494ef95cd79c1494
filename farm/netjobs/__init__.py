"""Synchronised multi-host jobs (NetJobs, seed 003): ``farm netjobs`` and its Python API."""

from farm.netjobs.api import run_config
from farm.netjobs.grammar import (
    NetJobsConfig,
    NetJobsSyntaxError,
    Target,
    TestBlock,
    parse_duration,
    parse_file,
    parse_text,
)
from farm.netjobs.monitor import NetJobsTaskSet, report_to_monitor
from farm.netjobs.report import format_result
from farm.netjobs.runner import Status, TargetResult, TestResult, TestRunner, simulate

__all__ = [
    "NetJobsConfig",
    "NetJobsSyntaxError",
    "NetJobsTaskSet",
    "Status",
    "Target",
    "TargetResult",
    "TestBlock",
    "TestResult",
    "TestRunner",
    "format_result",
    "parse_duration",
    "parse_file",
    "parse_text",
    "report_to_monitor",
    "run_config",
    "simulate",
]
