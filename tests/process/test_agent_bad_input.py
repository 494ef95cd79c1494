"""A real agent answers huge quota strings and names ending in a newline with a clear refusal."""

from __future__ import annotations

import pytest

from tests.process.conftest import AgentClient, ReplyError

BAD_INPUT = ("bad_request", "invalid_taskset")


def test_quota_of_4300_digits_is_refused_clearly(client: AgentClient) -> None:
    with pytest.raises(ReplyError) as err:
        client.call("start", tasks=[{"id": 0, "pkg": "hey", "quota": "9" * 4400}])
    assert err.value.code in BAD_INPUT, err.value
    assert "quota" in err.value.message and "Traceback" not in err.value.message
    assert client.call("status")["running"] is False


def test_binary_name_with_newline_is_refused(client: AgentClient) -> None:
    with pytest.raises(ReplyError) as err:
        client.call("start", tasks=[{"id": 0, "pkg": "hey"}], binaries={"x\n": "AAAA"})
    assert err.value.code == "bad_request", err.value
    assert client.call("status")["running"] is False
    assert client.call("status")["binaries"] == []
