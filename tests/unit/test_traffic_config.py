"""Traffic workloads: distributions, address picker, stats math, configs, pkg wiring."""

from __future__ import annotations

import ipaddress
import random
import statistics
from itertools import islice
from pathlib import Path

import pytest

from farm.agent import commands, jobs, pkgs, sched
from farm.agent.taskspec import InvalidTaskSet, TaskSpec, parse_task
from farm.agent.traffic import ROLES, TrafficConfigError
from farm.agent.traffic.__main__ import _parser
from farm.agent.traffic.config import (
    AddressPicker,
    check_config,
    client_config,
    config_argv,
    draws,
    parse_cidrs,
    parse_servers,
    server_config,
)
from farm.agent.traffic.dist import parse_distribution
from farm.agent.traffic.stats import ClientStats, percentile
from farm.errors import TaskSetError
from farm.taskset import TaskSet
from farm.taskset.validate import check_task
from farm.tasksets import resolve
from farm.tasksets.traffic import client_task


@pytest.mark.parametrize(
    ("spec", "text", "mean"),
    [
        (512, "fixed:512", 512),
        ("64", "fixed:64", 64),
        ("uniform:100-1000", "uniform:100-1000", 550),
        ("exp:0.01", "exp:0.01", 0.01),
        ("exponential:2", "exp:2", 2),
        ("pareto:2,100", "pareto:2,100", 200),
    ],
)
def test_distribution_forms(spec: object, text: str, mean: float) -> None:
    dist = parse_distribution(spec)
    assert str(dist) == text and dist.mean() == pytest.approx(mean)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("uniform:9-1", "above max"),
        ("uniform:5", "MIN-MAX"),
        ("exp:-1", ">= 0"),
        ("pareto:1.5", "SHAPE,SCALE"),
        ("pareto:0,10", "SHAPE,SCALE"),
        ("zipf:2", "unknown distribution"),
        ("fixed:abc", "not a number"),
        (True, "must be a number"),
        ("nan", "finite"),
    ],
)
def test_distribution_errors_name_the_key(spec: object, why: str) -> None:
    with pytest.raises(TrafficConfigError, match=why) as info:
        parse_distribution(spec, "config.size")
    assert "config.size" in str(info.value)


def test_distribution_samples_follow_their_law() -> None:
    rng = random.Random(5)
    uniform = [parse_distribution("uniform:100-200").sample(rng) for _ in range(5000)]
    assert min(uniform) >= 100 and max(uniform) <= 200
    assert statistics.mean(uniform) == pytest.approx(150, rel=0.02)
    expo = [parse_distribution("exp:0.5").sample(rng) for _ in range(20000)]
    assert statistics.mean(expo) == pytest.approx(0.5, rel=0.05)
    pareto = [parse_distribution("pareto:3,10").sample(rng) for _ in range(20000)]
    assert min(pareto) >= 10 and statistics.mean(pareto) == pytest.approx(15, rel=0.05)
    assert {parse_distribution(7).sample(rng) for _ in range(10)} == {7}


def test_picker_stays_in_ranges_and_skips_network_and_broadcast() -> None:
    nets = parse_cidrs("10.9.0.0/29, 10.9.1.7/32")
    picker, rng = AddressPicker(nets), random.Random(1)
    picked = {picker.pick(rng) for _ in range(2000)}
    expected = {f"10.9.0.{i}" for i in range(1, 7)} | {"10.9.1.7"}
    assert picked == expected
    assert {AddressPicker(parse_cidrs(["192.0.2.0/31"])).pick(rng) for _ in range(200)} == {
        "192.0.2.0",
        "192.0.2.1",
    }
    big = AddressPicker([ipaddress.ip_network("10.0.0.0/8")])  # never expanded
    assert ipaddress.ip_address(big.pick(rng)) in ipaddress.ip_network("10.0.0.0/8")


def test_servers_parsing() -> None:
    assert parse_servers("a:1, b ,[::1]:3", 9) == [("a", 1), ("b", 9), ("::1", 3)]
    assert parse_servers(["h:5"], None) == [("h", 5)]
    with pytest.raises(TrafficConfigError, match="needs host:port"):
        parse_servers("h", None)
    with pytest.raises(TrafficConfigError, match="outside"):
        parse_servers("h:70000", None)
    with pytest.raises(TrafficConfigError, match="cidr item"):
        parse_cidrs("10.0.0.0/33")


def test_draws_are_seeded_and_independent_of_the_global_rng() -> None:
    cfg = client_config({"servers": "a:1,b:2", "size": "uniform:1-100", "seed": 42})
    first = list(islice(draws(cfg), 50))
    random.seed(0)
    assert list(islice(draws(cfg), 50)) == first
    assert {d for d, _, _ in first} == {("a", 1), ("b", 2)}
    assert all(1 <= s <= 100 and isinstance(s, int) for _, s, _ in first)
    other = client_config({"servers": "a:1,b:2", "size": "uniform:1-100", "seed": 43})
    assert list(islice(draws(other), 50)) != first


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_client_stats_sums_and_percentiles() -> None:
    stats = ClientStats(seed=1, started=0.0)
    for i in range(1, 101):
        stats.record("h:1", 10 * i, 10 * i, i / 1000)
    stats.error(ConnectionRefusedError())
    snap = stats.snapshot(True, {"seed": 1})
    assert next(iter(snap)) == "traffic"  # the stats-line prefix
    assert snap["messages"] == 100 and snap["errors"] == 1
    assert snap["bytes_sent"] == snap["bytes_received"] == 10 * sum(range(1, 101))
    assert snap["latency_ms"] == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0, "mean": 50.5}
    assert snap["error_kinds"] == {"ConnectionRefusedError": 1}
    assert snap["per_destination"] == {"h:1": 100}


def test_configs_defaults_and_errors() -> None:
    srv = server_config({"port": 0})
    assert srv == {"port": 0, "host": "0.0.0.0", "mode": "echo", "duration": 0.0,
                   "stats_interval": 1.0}  # fmt: skip
    cli = client_config({"cidr": "10.0.0.0/24", "port": 5})
    assert cli["duration"] == 5.0 and str(cli["size"]) == "fixed:1000" and cli["count"] == 0
    for pkg, cfg, why in [
        ("traffic_server", {}, "config.port is required"),
        ("traffic_server", {"port": 1, "mode": "drop"}, "config.mode"),
        ("traffic_client", {"port": 1}, "exactly one of servers or cidr"),
        ("traffic_client", {"servers": "a:1", "cidr": "10.0.0.0/8"}, "exactly one"),
        ("traffic_client", {"cidr": "10.0.0.0/8"}, "config.port is required with cidr"),
        ("traffic_client", {"servers": "a:1", "count": -1}, "config.count"),
        ("traffic_client", {"servers": "a:1", "seed": "x"}, "config.seed"),
        ("traffic_client", {"servers": "a:1", "duration": -2}, "config.duration"),
        ("traffic_client", {"servers": "a:1", "size": "fixed:99999999"}, "config.size"),
        ("traffic_client", {"servers": "a:1", "colour": 1}, "config.colour is not a key"),
    ]:
        problem = check_config(pkg, cfg)
        assert problem is not None and why in problem, (cfg, problem)
        with pytest.raises(InvalidTaskSet, match="config"):  # the agent refuses it before start
            parse_task({"id": 1, "pkg": pkg, "config": cfg}, 0)
        with pytest.raises(TaskSetError):  # and so does the host, before anything starts
            check_task({"id": 1, "pkg": pkg, "config": cfg}, 0, frozenset())
    assert check_config("traffic_client", {"servers": "a:1"}) is None


def test_config_argv_round_trips_through_the_command_line() -> None:
    config = {"servers": ["127.0.0.1:5", "h:6"], "size": "uniform:1-9", "think": 0.5,
              "duration": 2, "seed": 3, "count": 10}  # fmt: skip
    argv = config_argv("traffic_client", config)
    assert argv[0] == "client"
    parsed = vars(_parser().parse_args(argv))
    assert parsed["servers"] == "127.0.0.1:5,h:6" and parsed["size"] == "uniform:1-9"
    assert config_argv("traffic_server", {"port": 7, "mode": "sink"}) == [
        "server",
        "--port=7",
        "--mode=sink",
    ]


def test_pkgs_registered_and_checked_by_the_agent() -> None:
    assert set(ROLES) == pkgs.TRAFFIC_PKGS
    assert all(pkgs.is_known(p) for p in pkgs.TRAFFIC_PKGS)
    spec = parse_task({"id": 1, "pkg": "traffic_client", "config": {"servers": "h:1"}}, 0)
    assert spec.pkg == "traffic_client"
    bad = {"id": 1, "pkg": "traffic_client", "config": {"servers": "h:1", "think": "x:"}}
    with pytest.raises(InvalidTaskSet, match=r"task 1: config\.think"):
        parse_task(bad, 0)


def test_launch_of_a_traffic_job(tmp_path: Path) -> None:
    task = TaskSpec(id=3, pkg="traffic_server", config={"port": 0, "mode": "sink"})
    launch = commands.build_launch(task, 0, sched.SchedPlan(), {}, tmp_path)
    assert launch.argv[-5:] == ["-m", "farm.agent.traffic", "server", "--port=0", "--mode=sink"]
    assert launch.stats and launch.term_grace > 0 and not launch.builtin
    assert launch.env["PYTHONPATH"].split(":")[0] == commands.AGENT_ROOT
    assert (Path(commands.AGENT_ROOT) / "farm" / "agent" / "traffic" / "__main__.py").exists()
    plain = commands.build_launch(TaskSpec(id=1, pkg="hey"), 0, sched.SchedPlan(), {}, tmp_path)
    assert not plain.stats and plain.term_grace == 0


def test_job_parses_stats_lines_across_chunks(tmp_path: Path) -> None:
    launch = jobs.Launch(argv=["x"], env={}, cwd=str(tmp_path), builtin=False, stats=True)
    job = jobs.Job(1, 0, 0.0, launch, lambda _: None)
    job._scan_stats(b'noise\n{"traffic":"client","messages":1}\n{"traffic":"cl')
    job._scan_stats(b'ient","messages":2,"final":true}\n{"traffic": broken\n')
    assert [s["messages"] for s in job.stats] == [1, 2]
    assert job.last_stats == {"traffic": "client", "messages": 2, "final": True}


def test_host_task_model_accepts_traffic_pkgs() -> None:
    server = {"pkg": "traffic_server", "config": {"port": 1}}
    taskset = TaskSet([client_task("127.0.0.1:5001"), server])
    taskset.validate()  # known pkgs; config checks of traffic pkgs happen on the agent
    with pytest.raises(TaskSetError, match="unknown"):
        TaskSet([{"pkg": "traffic_nope"}]).validate()
    for name in ("TrafficTaskSet", "TrafficServerTaskSet", "TrafficClientTaskSet"):
        variants = list(resolve(f"traffic.{name}")().variants())
        assert len(variants) == 1
        for task in variants[0].description()["tasks"]:
            assert check_config(task["pkg"], task["config"]) is None, task
    sizes = list(resolve("traffic.TrafficSizesTaskSet")().variants())
    assert [t["config"]["size"] for v in sizes for t in v.description()["tasks"][1:]] == [
        "fixed:512",
        "uniform:100-1000",
        "exp:500",
        "pareto:1.5,200",
    ]


def test_traffic_package_is_stdlib_only() -> None:
    import ast
    import sys

    root = Path(commands.AGENT_ROOT) / "farm" / "agent" / "traffic"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 7
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                ok = name.split(".")[0] in sys.stdlib_module_names
                assert ok or name.startswith("farm.agent.traffic"), f"{path.name}: {name}"
