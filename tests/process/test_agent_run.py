"""Task sets run by a real agent as real processes: events, limits, stop, clients."""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from typing import Any

import pytest

from farm.agent import protocol
from tests.process.conftest import AgentClient, AgentProcess, ReplyError

Events = list[dict[str, Any]]


def by_task(events: Events) -> dict[int, Events]:
    out: dict[int, Events] = defaultdict(list)
    for e in events:
        out[e["task_id"]].append(e)
    return out


def exits(events: Events, task_id: int) -> Events:
    return [e for e in events if e["task_id"] == task_id and e["type"] in protocol.JOB_EXIT_TYPES]


def check_well_formed(events: Events) -> None:
    """Every event has the wire keys; ts never decreases; per job START precedes its exit."""
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    for e in events:
        assert e["type"] in protocol.EVENT_TYPES
        assert isinstance(e["task_id"], int) and isinstance(e["ts"], float)
        assert e["job"] is None or isinstance(e["job"], int)
    for task_id, evs in by_task(events).items():
        if task_id < 0:
            continue
        jobs: dict[int, list[str]] = defaultdict(list)
        for e in evs:
            if e["job"] is not None:
                jobs[e["job"]].append(e["type"])
        for job, kinds in jobs.items():
            assert kinds in (["START", kinds[-1]], ["NOT_SCHEDULED"]), (task_id, job, kinds)
            assert kinds[-1] in protocol.JOB_EXIT_TYPES
        done = [e for e in evs if e["type"] == "JOBS_DONE"]
        if done:
            assert len(done) == 1 and evs[-1]["type"] == "JOBS_DONE"


def test_periodic_set_runs_with_releases_on_the_grid(client: AgentClient) -> None:
    tasks: list[dict[str, Any]] = [
        {"id": 1, "pkg": "hey", "period": 500, "offset": 50, "numberofjobs": 3},
        {"id": 2, "pkg": "pi", "config": {"digits": 30}, "period": 400, "numberofjobs": 2},
        {"id": 3, "pkg": "namaste", "numberofjobs": 1},
    ]
    result = client.call("start", tasks=tasks)
    t0 = result["t0"]
    assert result["tasks"] == [1, 2, 3]
    events = client.wait_done([1, 2, 3])
    check_well_formed(events)
    tasks_by_id = {t["id"]: t for t in tasks}
    for task_id, evs in by_task(events).items():
        task = tasks_by_id[task_id]
        starts = [e for e in evs if e["type"] == "START"]
        assert [e["job"] for e in starts] == list(range(task["numberofjobs"]))
        assert [e["type"] for e in exits(events, task_id)] == ["EXIT"] * task["numberofjobs"]
        for k, start in enumerate(starts):
            release = t0 + (task.get("offset", 0) + k * task.get("period", 0)) / 1000
            assert start["release"] == pytest.approx(release, abs=1e-6)
            assert start["ts"] >= release
            assert start["ts"] - release < 5.0  # generous sanity bound only
    outputs = [e["output"] for e in exits(events, 1)]
    assert outputs == [f"Hey! I am task 1 job {k}.\n" for k in range(3)]
    assert exits(events, 2)[0]["output"].startswith("3.14159265358979")


def test_back_to_back_jobs_with_period_zero(client: AgentClient) -> None:
    events = client.run_taskset([{"id": 0, "pkg": "hey", "numberofjobs": 3}])
    check_well_formed(events)
    kinds = [(e["type"], e["job"]) for e in events]
    assert kinds == [
        ("START", 0), ("EXIT", 0), ("START", 1), ("EXIT", 1),
        ("START", 2), ("EXIT", 2), ("JOBS_DONE", None),
    ]  # fmt: skip


def test_agent_is_ready_as_soon_as_the_last_jobs_done_arrives(client: AgentClient) -> None:
    for n in range(10):
        client.events.clear()
        client.run_taskset([{"id": n, "pkg": "shell", "config": {"command": "true"}}])
        assert client.call("status")["running"] is False
        if n % 2:
            assert client.call("clear") == {"cleared": True, "stopped": False}


def test_late_job_gets_exit_critical(client: AgentClient) -> None:
    tasks = [
        {"id": 0, "pkg": "idle", "config": {"ms": 300}, "criticaltime": 20},
        {"id": 1, "pkg": "idle", "config": {"ms": 300}, "deadline": 20},  # deadline is the fallback
        {"id": 2, "pkg": "idle", "config": {"ms": 1}, "criticaltime": 20_000},
    ]
    events = client.run_taskset(tasks)
    check_well_formed(events)
    assert [e["type"] for e in exits(events, 0)] == ["EXIT_CRITICAL"]
    assert [e["type"] for e in exits(events, 1)] == ["EXIT_CRITICAL"]
    assert [e["type"] for e in exits(events, 2)] == ["EXIT"]
    assert "critical time 20 ms" in exits(events, 0)[0]["detail"]


def test_job_over_its_memory_quota(client: AgentClient) -> None:
    tasks = [
        {"id": 0, "pkg": "memhog", "config": {"bytes": 64 << 20}, "quota": 8 << 20},
        {"id": 1, "pkg": "memhog", "config": {"bytes": 1 << 20}, "quota": "32M"},
        {"id": 2, "pkg": "shell", "quota": 1 << 20, "config": {"command": "echo hi"}},
        {"id": 3, "pkg": "shell", "quota": 512 << 20, "config": {"command": "echo hi"}},
    ]  # fmt: skip
    events = client.run_taskset(tasks)
    check_well_formed(events)
    assert [e["type"] for e in exits(events, 0)] == ["OUT_OF_QUOTA"]
    assert [e["type"] for e in exits(events, 1)] == ["EXIT"]
    # an external program refused memory fails its own way; the detail names the quota
    (small,) = exits(events, 2)
    assert small["type"] == "EXIT_ERROR" and "quota of 1048576 bytes" in small["detail"]
    assert [e["type"] for e in exits(events, 3)] == ["EXIT"]


def test_job_over_its_cpu_budget_is_stopped(client: AgentClient) -> None:
    tasks = [
        {"id": 0, "pkg": "shell", "config": {"command": "while :; do :; done"},
         "executiontime": 150},
        {"id": 1, "pkg": "cond_42", "config": {"arg": 1, "count": 10**10}, "executiontime": 150},
        {"id": 2, "pkg": "hey", "executiontime": 5000},
    ]  # fmt: skip
    events = client.run_taskset(tasks)
    check_well_formed(events)
    for task_id in (0, 1):
        (end,) = exits(events, task_id)
        assert end["type"] == "EXIT_ERROR"
        assert end["detail"].startswith("budget exceeded")
        assert end["cpu"] < 5.0  # stopped, not run to completion
    assert [e["type"] for e in exits(events, 2)] == ["EXIT"]


def test_job_overrunning_its_period(client: AgentClient) -> None:
    tasks = [{"id": 0, "pkg": "idle", "config": {"ms": 5000}, "period": 100, "numberofjobs": 2}]
    events = client.run_taskset(tasks)
    check_well_formed(events)
    assert [(e["type"], e["job"]) for e in events] == [
        ("START", 0), ("EXIT_PERIOD", 0), ("START", 1), ("EXIT_PERIOD", 1), ("JOBS_DONE", None),
    ]  # fmt: skip


def test_failing_jobs_get_exit_error(client: AgentClient) -> None:
    tasks = [
        {"id": 0, "pkg": "shell", "config": {"command": "echo out; echo err >&2; exit 3"}},
        {"id": 1, "pkg": "shell", "config": {"command": "kill -SEGV $$"}},
    ]
    events = client.run_taskset(tasks)
    (first,) = exits(events, 0)
    assert (first["type"], first["detail"], first["status"]) == ("EXIT_ERROR", "exit status 3", 3)
    assert first["output"] == "out\nerr\n"
    (second,) = exits(events, 1)
    assert second["type"] == "EXIT_ERROR" and "SIGSEGV" in second["detail"]


def test_stop_ends_every_job_process(agent: AgentProcess, client: AgentClient) -> None:
    tasks = [
        {"id": 0, "pkg": "shell", "config": {"command": "sleep 30 & sleep 30; wait"}},
        {"id": 1, "pkg": "idle", "config": {"ms": 30_000}, "numberofjobs": 0},
        {"id": 2, "pkg": "shell", "config": {"command": "exec sleep 30"}, "period": 60_000,
         "numberofjobs": 0, "priority": 5},
    ]  # fmt: skip
    client.call("start", tasks=tasks)
    client.collect(lambda evs: sum(e["type"] == "START" for e in evs) == 3)
    assert len(agent.children()) >= 3
    result = client.call("stop")
    assert result["stopped"] is True
    assert agent.children() == []  # every job process is gone once stop replied
    events = client.events
    check_well_formed(events)
    for task_id in (0, 1, 2):
        assert [e["type"] for e in exits(events, task_id)] == ["EXIT_EXTERNAL"]
    assert not [e for e in events if e["type"] == "JOBS_DONE"]
    assert client.call("status")["running"] is False
    with pytest.raises(ReplyError) as err:
        client.call("stop")
    assert err.value.code == "not_running"
    again = client.run_taskset([{"id": 9, "pkg": "hey"}])  # the agent is ready for the next set
    assert [e["type"] for e in exits(again, 9)] == ["EXIT"]


def test_second_start_is_busy_and_other_clients_can_query(agent: AgentProcess) -> None:
    owner, other = agent.connect(), agent.connect()
    long_set = [{"id": 4, "pkg": "idle", "config": {"ms": 30_000}, "numberofjobs": 0}]
    owner.call("start", tasks=long_set)
    owner.collect(lambda evs: any(e["type"] == "START" for e in evs))
    for who in (owner, other):
        with pytest.raises(ReplyError) as err:
            who.call("start", tasks=[{"id": 1, "pkg": "hey"}])
        assert err.value.code == "busy"
    status = other.call("status")
    assert status["running"] is True
    assert status["tasks"] == [4]
    assert status["running_jobs"] == {"4": 0}
    assert status["clients"] == 2
    assert other.events == []  # events go to the client that started the set
    other.call("stop")
    owner.collect(lambda evs: any(e["type"] == "EXIT_EXTERNAL" for e in evs))
    assert owner.call("status")["running"] is False


def test_owner_leaving_stops_the_set(agent: AgentProcess) -> None:
    owner = agent.connect()
    owner.call("start", tasks=[{"id": 0, "pkg": "shell", "config": {"command": "sleep 30"}}])
    owner.collect(lambda evs: any(e["type"] == "START" for e in evs))
    owner.close()
    watcher = agent.connect()
    deadline = time.monotonic() + 20
    while watcher.call("status")["running"]:  # the agent notices the loss asynchronously
        assert time.monotonic() < deadline, "set still running after its owner left"
        time.sleep(0.05)
    assert agent.children() == []


def test_shell_pkg(client: AgentClient) -> None:
    events = client.run_taskset(
        [{"id": 0, "pkg": "shell", "config": {"command": "echo task=$FARM_TASK_ID job=$FARM_JOB"},
          "numberofjobs": 2}]
    )  # fmt: skip
    assert [e["output"] for e in exits(events, 0)] == ["task=0 job=0\n", "task=0 job=1\n"]


def test_job_environment_has_no_token(client: AgentClient) -> None:
    events = client.run_taskset(
        [{"id": 0, "pkg": "shell", "config": {"command": "echo token=${FARM_TOKEN:-none}"}}]
    )
    assert exits(events, 0)[0]["output"] == "token=none\n"


def test_uploaded_binary(client: AgentClient) -> None:
    script = b'#!/bin/sh\necho "bin:$1:$2:$#"\n'
    binaries = {"myscript": base64.b64encode(script).decode()}
    tasks = [{"id": 0, "pkg": "myscript", "config": {"a": "x", "b": 5}}]
    events = client.run_taskset(tasks, binaries=binaries)
    assert exits(events, 0)[0]["output"] == "bin:x:5:2\n"
    assert client.call("status")["binaries"] == ["myscript"]
    # uploaded binaries stay until clear; explicit args win over the config values
    again = client.run_taskset([{"id": 1, "pkg": "myscript", "config": {"args": ["p", "q r"]}}])
    assert exits(again, 1)[0]["output"] == "bin:p:q r:2\n"
    assert client.call("clear") == {"cleared": True, "stopped": False}
    with pytest.raises(ReplyError) as err:
        client.call("start", tasks=tasks)
    assert err.value.code == "invalid_taskset"


def test_unstartable_job_is_not_scheduled(client: AgentClient) -> None:
    binaries = {"junk": base64.b64encode(b"\x00\x01 not an executable").decode()}
    tasks = [
        {"id": 0, "pkg": "junk", "period": 100, "numberofjobs": 2},
        {"id": 1, "pkg": "junk", "numberofjobs": 0},  # back to back, forever: gives up
    ]
    events = client.run_taskset(tasks, binaries=binaries)
    check_well_formed(events)
    assert [(e["type"], e["job"]) for e in events if e["task_id"] == 0] == [
        ("NOT_SCHEDULED", 0), ("NOT_SCHEDULED", 1), ("JOBS_DONE", None),
    ]  # fmt: skip
    kinds = [(e["type"], e["job"]) for e in events if e["task_id"] == 1]
    assert kinds == [("NOT_SCHEDULED", 0), ("NOT_SCHEDULED", 1), ("NOT_SCHEDULED", 2),
                     ("JOBS_DONE", None)]  # fmt: skip
    assert "could not start" in events[0]["detail"]


def test_bad_binaries_are_refused(client: AgentClient) -> None:
    for binaries in ({"../evil": "AAAA"}, {"ok": "not base64!"}, {"ok": 5}, ["x"]):
        with pytest.raises(ReplyError) as err:
            client.call("start", tasks=[{"id": 0, "pkg": "hey"}], binaries=binaries)
        assert err.value.code == "bad_request"
    assert client.call("status")["running"] is False


@pytest.mark.parametrize(
    ("task", "attribute"),
    [
        ({"id": 0, "pkg": "hey", "priority": 129}, "priority"),
        ({"id": 0, "pkg": "hey", "period": -1}, "period"),
        ({"id": 0, "pkg": "hey", "numberofjobs": "3"}, "numberofjobs"),
        ({"id": 0, "pkg": "no-such-pkg"}, "pkg"),
        ({"id": 0, "pkg": "pi", "config": {"digits": "many"}}, "digits"),
        ({"id": 0, "pkg": "shell", "config": {}}, "command"),
        ({"id": True, "pkg": "hey"}, "id"),
    ],
)
def test_invalid_taskset_is_refused_whole(
    client: AgentClient, task: dict[str, Any], attribute: str
) -> None:
    with pytest.raises(ReplyError) as err:
        client.call("start", tasks=[{"id": 7, "pkg": "hey"}, task])
    assert err.value.code == "invalid_taskset"
    assert attribute in err.value.message
    assert client.call("status")["running"] is False
    assert client.events == []


def test_admission_control_params_are_acknowledged(client: AgentClient) -> None:
    params = [{"optimize": {"goal": {"fairness": {"apply": 1}}, "query_interval": 1000}}]
    result = client.call("start", tasks=[{"id": 0, "pkg": "hey"}], params=params)
    assert result["params"] == params
    events = client.wait_done([0])
    notice = events[0]
    assert (notice["type"], notice["task_id"], notice["job"]) == ("NOTICE", -1, None)
    assert notice["params"] == params and "admission control" in notice["detail"]
    assert client.call("status")["params"] == params


def _policy_of(stat_line: str) -> tuple[int, int]:
    """(rt_priority, policy) from a /proc/PID/stat line."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return int(fields[37]), int(fields[38])


@pytest.mark.parametrize(
    ("task", "policy", "rt_priority"),
    [
        ({"priority": 42}, 1, 42),  # SCHED_FIFO
        ({"priority": 128, "period": 1000, "executiontime": 500}, 6, 0),  # SCHED_DEADLINE
    ],
)
def test_realtime_policy_applies_or_a_notice_says_why(
    client: AgentClient, task: dict[str, Any], policy: int, rt_priority: int
) -> None:
    tasks = [{"id": 0, "pkg": "shell", "config": {"command": "cat /proc/$$/stat"}, **task}]
    events = client.run_taskset(tasks)
    check_well_formed(events)
    notices = [e for e in events if e["type"] == "NOTICE"]
    (start,) = [e for e in events if e["type"] == "START"]
    (end,) = exits(events, 0)
    assert end["type"] == "EXIT", end
    if notices:
        assert len(notices) == 1 and notices[0]["task_id"] == 0
        assert "best effort" in notices[0]["detail"]
        assert start["sched"] == "other"
        assert _policy_of(end["output"]) == (0, 0)
    else:
        assert start["sched"] != "other"
        assert _policy_of(end["output"]) == (rt_priority, policy)
