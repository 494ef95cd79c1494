"""AddressPool and parse_targets: expansion rules and every error."""

from __future__ import annotations

import ipaddress
import random

import pytest

from farm.errors import ConfigError
from farm.targets import MAX_HOSTS, AddressPool, parse_range, parse_targets


def test_cidr_excludes_network_and_broadcast() -> None:
    assert parse_targets(["172.25.1.0/29"]) == [(f"172.25.1.{i}", 3001) for i in range(1, 7)]


def test_slash_31_and_32_keep_every_address() -> None:
    assert parse_targets(["10.0.0.0/31"], default_port=9) == [("10.0.0.0", 9), ("10.0.0.1", 9)]
    assert parse_targets(["10.0.0.7/32"]) == [("10.0.0.7", 3001)]


def test_single_address_host_and_port_forms() -> None:
    got = parse_targets(["10.0.0.7", "10.0.0.8:4000", "board1", "Board2:5", "[fd00::1]:7"], 3002)
    assert got == [
        ("10.0.0.7", 3002),
        ("10.0.0.8", 4000),
        ("board1", 3002),
        ("board2", 5),
        ("fd00::1", 7),
    ]


def test_cidr_with_port_and_ipv6_range() -> None:
    assert parse_targets(["10.0.0.0/30:4000"]) == [("10.0.0.1", 4000), ("10.0.0.2", 4000)]
    assert [h for h, _ in parse_targets(["fd00::/126"])] == [
        "fd00::",
        "fd00::1",
        "fd00::2",
        "fd00::3",
    ]


def test_host_bits_set_mean_the_containing_network() -> None:
    assert parse_targets(["10.0.0.7/30"]) == [("10.0.0.5", 3001), ("10.0.0.6", 3001)]


def test_duplicates_removed_order_kept() -> None:
    got = parse_targets(["10.0.0.2", "10.0.0.0/30", "10.0.0.1"])
    assert got == [("10.0.0.2", 3001), ("10.0.0.1", 3001)]


def test_single_string_may_hold_several_items() -> None:
    assert parse_targets("10.0.0.1, 10.0.0.2 10.0.0.3") == [
        ("10.0.0.1", 3001),
        ("10.0.0.2", 3001),
        ("10.0.0.3", 3001),
    ]


def test_largest_allowed_range() -> None:
    assert len(parse_targets(["10.1.0.0/16"])) == 65534


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("10.0.0.0/33", ["10.0.0.0/33", "/33", "out of range"]),
        ("300.1.1.1", ["300.1.1.1", "not a valid IP address"]),
        ("abc/24", ["abc/24", "'abc' is not an IP address"]),
        ("10.0.0.0/x", ["10.0.0.0/x", "prefix 'x' is not a number"]),
        ("1.2.3", ["1.2.3", "not a valid IP address"]),
        ("fd00::/129", ["fd00::/129", "out of range"]),
        ("x_y", ["x_y", "not an IP address, CIDR range or host name"]),
        ("-bad-", ["-bad-", "host name"]),
        ("10.0.0.1:0", ["10.0.0.1:0", "port must be an integer in 1..65535"]),
        ("10.0.0.1:70000", ["70000", "1..65535"]),
        ("10.0.0.1:http", ["10.0.0.1:http", "port"]),
        (":3001", [":3001", "no host before the port"]),
        ("[fd00::1", ["[fd00::1", "missing ']'"]),
        ("[fd00::1]x", ["[fd00::1]x", "[address]:port"]),
        ("  ", ["empty"]),
    ],
)
def test_bad_items_name_themselves(item: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_targets(["10.0.0.1", item])
    for word in words:
        assert word in str(err.value)


def test_non_string_item() -> None:
    with pytest.raises(ConfigError, match="bad target 42"):
        parse_targets(["10.0.0.1", 42])  # type: ignore[list-item]


def test_empty_list() -> None:
    with pytest.raises(ConfigError, match="no targets"):
        parse_targets([])


def test_absurdly_large_range_refused() -> None:
    with pytest.raises(ConfigError, match=r"10\.0\.0\.0/8.*16777214 hosts is too many"):
        parse_targets(["10.0.0.0/8"])
    with pytest.raises(ConfigError, match="too many"):
        parse_targets(["fd00::/64"])


def test_total_size_limited() -> None:
    with pytest.raises(ConfigError, match=f"more than {MAX_HOSTS} hosts in total"):
        parse_targets(["10.1.0.0/16", "10.2.0.0/16"])
    with pytest.raises(ConfigError, match="in total"):
        parse_targets(["10.0.0.0/30", "a", "b"], max_hosts=3)


def test_parse_range_errors() -> None:
    assert parse_range("10.0.0.9/24") == ipaddress.ip_network("10.0.0.0/24")
    for bad in ("10.0.0.0/33", "abc/24", "", "300.1.1.1"):
        with pytest.raises(ConfigError, match="bad address range"):
            parse_range(bad)


def test_address_pool_random_picks_stay_in_ranges() -> None:
    pool = AddressPool(rng=random.Random(1))
    pool.set("server", ["10.0.0.0/30"])
    pool.set("clients", ["172.25.1.0/24", "fd00::/64"])  # random() never expands a range
    nets = [ipaddress.ip_network(n) for n in ("10.0.0.0/30", "172.25.1.0/24", "fd00::/64")]
    picks = {pool.random() for _ in range(300)}
    for addr in picks:
        ip = ipaddress.ip_address(addr)
        assert any(ip in n for n in nets)
        assert addr not in ("10.0.0.0", "10.0.0.3", "172.25.1.0", "172.25.1.255")
    assert any(a.startswith("10.0.0.") for a in picks)
    assert any(":" in a for a in picks)
    assert {pool.random_node() for _ in range(100)} == {"server", "clients"}
    assert "172.25.1.77" in pool and "8.8.8.8" not in pool and "junk" not in pool


def test_address_pool_iteration_and_set_replaces() -> None:
    pool = AddressPool()
    pool.set("a", ["10.0.0.0/30", "10.0.0.1"])
    pool.set("b", "10.0.1.0/30")
    assert list(pool) == ["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"]
    assert list(pool.hosts("b")) == ["10.0.1.1", "10.0.1.2"]
    pool.set("b", ["10.0.2.5"])
    assert list(pool.hosts("b")) == ["10.0.2.5"]
    assert pool.nodes() == ["a", "b"] and len(pool) == 2
    pool.remove("a")
    assert pool.nodes() == ["b"]


def test_address_pool_own_node_never_picked_and_seer_names() -> None:
    pool = AddressPool(nodename="me", rng=random.Random(2))
    pool.Set("me", ["10.9.9.9"])
    pool.Set("other", ["10.0.0.5"])
    assert {pool.Random() for _ in range(20)} == {"10.0.0.5"}
    assert {pool.RandomNode() for _ in range(20)} == {"other"}


def test_address_pool_errors() -> None:
    pool = AddressPool()
    with pytest.raises(ConfigError, match="empty"):
        pool.random()
    with pytest.raises(ConfigError, match="empty"):
        pool.random_node()
    with pytest.raises(ConfigError, match="abc/24"):
        pool.set("n", ["abc/24"])
    with pytest.raises(ConfigError, match="no address ranges"):
        pool.set("n", [])
