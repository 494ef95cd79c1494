"""Mapping of task priorities to Linux scheduling policies."""

from __future__ import annotations

import os

from farm.agent import sched


def test_normal_and_fifo() -> None:
    assert sched.plan(0, 0, 0, 0) == sched.SchedPlan()
    assert sched.plan(10, 0, 0, 0) == sched.SchedPlan("fifo", 10)
    assert sched.plan(10, 0, 0, 0).describe() == "fifo:10"


def test_fifo_priority_above_kernel_max_is_clamped_with_a_note() -> None:
    top = os.sched_get_priority_max(os.SCHED_FIFO)
    plan = sched.plan(127, 0, 0, 0)
    assert (plan.policy, plan.priority) == ("fifo", top)
    assert plan.notes and "clamped" in plan.notes[0]


def test_deadline_parameters() -> None:
    plan = sched.plan(128, executiontime_ms=2, critical_ms=8, period_ms=10)
    assert (plan.policy, plan.runtime_ns, plan.deadline_ns, plan.period_ns) == (
        "deadline", 2_000_000, 8_000_000, 10_000_000,
    )  # fmt: skip
    assert plan.describe() == "deadline:2ms/8ms/10ms"


def test_deadline_defaults_and_clamps() -> None:
    share = sched._rt_share()
    no_budget = sched.plan(128, 0, 0, 10)  # runtime = the real-time share of the deadline
    assert no_budget.deadline_ns == no_budget.period_ns == 10_000_000
    assert no_budget.runtime_ns == int(10_000_000 * share)
    huge = sched.plan(128, 999_999_999, 0, 10)
    assert huge.runtime_ns <= huge.deadline_ns
    one_shot = sched.plan(128, 1, 5, 0)  # no period: the deadline is the period
    assert one_shot.period_ns == one_shot.deadline_ns == 5_000_000


def test_deadline_without_any_time_falls_back_with_a_note() -> None:
    plan = sched.plan(128, 1, 0, 0)
    assert plan.policy == "other" and "best effort" in plan.notes[0]


def test_explanations_name_the_errno() -> None:
    import errno

    text = sched._explain(errno.EPERM, "SCHED_FIFO 5")
    assert text.startswith("SCHED_FIFO 5 EPERM") and "best effort" in text
    assert "admission" in sched._explain(errno.EBUSY, "SCHED_DEADLINE")


def test_other_policy_needs_nothing_in_the_child() -> None:
    assert sched.child_applier(sched.SchedPlan())() is None
