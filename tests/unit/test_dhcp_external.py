"""``dhcp = "external"``: checking the user's dhcpd.conf for farm's reservations (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.bridge.bridge import BridgeNetwork
from farm.bridge.dhcp import (
    DhcpPlan,
    DhcpServer,
    ExternalDhcp,
    check_reservations,
    host_line,
    parse_reservations,
    render_conf,
    reservation_problems,
)
from farm.config import FarmConfig
from farm.errors import ConfigError, NetworkError

PLAN = DhcpPlan.create("10.200.40.0/21", machines=3)

OK_CONF = """\
# the site's dhcpd.conf, maintained by hand
authoritative;
subnet 10.200.40.0 netmask 255.255.248.0 {
    range 10.200.41.0 10.200.47.254;
    # farm's guests
    host farm1 { hardware ethernet 52:54:00:fa:00:01; fixed-address 10.200.40.11; }
    host farm2 {
        hardware ethernet 52:54:00:FA:00:02;   # upper case is the same MAC
        fixed-address 10.200.40.12;
    }
}
group {
    host "third guest" { fixed-address 10.200.40.13; hardware ethernet 52:54:0:fa:0:3; }
}
host printer { hardware ethernet 00:11:22:33:44:55; fixed-address 10.200.40.200; }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dhcpd.conf"
    path.write_text(text)
    return path


def test_parse_reservations_anywhere_in_the_file() -> None:
    found = parse_reservations(OK_CONF)
    assert found == {
        "52:54:00:fa:00:01": ["10.200.40.11"],
        "52:54:00:fa:00:02": ["10.200.40.12"],
        "52:54:00:fa:00:03": ["10.200.40.13"],
        "00:11:22:33:44:55": ["10.200.40.200"],
    }


def test_commented_out_hosts_do_not_count() -> None:
    text = "# host farm1 { hardware ethernet 52:54:00:fa:00:01; fixed-address 10.200.40.11; }\n"
    assert parse_reservations(text) == {}


def test_ok_config_passes(tmp_path: Path) -> None:
    check_reservations(PLAN, _write(tmp_path, OK_CONF))
    assert reservation_problems(PLAN, OK_CONF) == []
    # farm's own rendered config has every reservation too
    assert reservation_problems(PLAN, render_conf(PLAN)) == []


def test_missing_reservations_are_listed_with_the_lines_to_add(tmp_path: Path) -> None:
    text = "host farm1 { hardware ethernet 52:54:00:fa:00:01; fixed-address 10.200.40.11; }\n"
    path = _write(tmp_path, text)
    with pytest.raises(NetworkError) as info:
        check_reservations(PLAN, path)
    message = str(info.value)
    assert "lacks 2 of farm's 3 reservations" in message
    assert str(path) in message
    assert "52:54:00:fa:00:02 -> 10.200.40.12: missing" in message
    assert "52:54:00:fa:00:03 -> 10.200.40.13: missing" in message
    assert "52:54:00:fa:00:01" not in message
    assert host_line("farm2", "52:54:00:fa:00:02", "10.200.40.12") in message
    assert host_line("farm3", "52:54:00:fa:00:03", "10.200.40.13") in message
    # the printed lines are exactly what makes the check pass
    added = text + "\n".join(line for line in message.splitlines() if line.startswith("host "))
    check_reservations(PLAN, _write(tmp_path, added))


def test_wrong_ip_is_a_mismatch(tmp_path: Path) -> None:
    wrong = OK_CONF.replace("fixed-address 10.200.40.12;", "fixed-address 10.200.40.99;")
    with pytest.raises(NetworkError) as info:
        check_reservations(PLAN, _write(tmp_path, wrong))
    message = str(info.value)
    assert "lacks 1 of farm's 3" in message
    assert "52:54:00:fa:00:02 -> 10.200.40.12: reserved as 10.200.40.99 instead" in message
    assert host_line("farm2", "52:54:00:fa:00:02", "10.200.40.12") in message
    problems = reservation_problems(PLAN, wrong)
    assert [(p.mac, str(p.ip), p.have) for p in problems] == [
        ("52:54:00:fa:00:02", "10.200.40.12", ("10.200.40.99",))
    ]


def test_unreadable_config_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match=r"cannot read the dhcpd config .*nope\.conf"):
        check_reservations(PLAN, tmp_path / "nope.conf")


def test_external_dhcp_never_runs_anything(tmp_path: Path) -> None:
    ext = ExternalDhcp(PLAN, _write(tmp_path, OK_CONF), lease_file=tmp_path / "none.leases")
    assert ext.running() is False and ext.pid is None
    ext.start()  # only the check
    ext.stop()
    assert ext.leases() == []
    with pytest.raises(NetworkError, match="missing"):
        ExternalDhcp(PLAN, _write(tmp_path, "")).start()


def test_config_dhcp_mode_and_conf_path(tmp_path: Path) -> None:
    default = FarmConfig(state_dir=tmp_path)
    assert default.dhcp == "farm"
    assert default.dhcpd_conf == Path("/etc/dhcp/dhcpd.conf")
    ext = FarmConfig(state_dir=tmp_path, dhcp="external", dhcpd_conf=str(tmp_path / "d.conf"))  # type: ignore[arg-type]
    assert ext.dhcpd_conf == tmp_path / "d.conf"
    with pytest.raises(ConfigError, match="dhcp must be one of farm, external"):
        FarmConfig(state_dir=tmp_path, dhcp="system")
    with pytest.raises(ConfigError, match="dhcpd_conf"):
        FarmConfig(state_dir=tmp_path, dhcpd_conf=3)  # type: ignore[arg-type]
    toml = tmp_path / "farm.toml"
    toml.write_text('dhcp = "external"\ndhcpd_conf = "/srv/dhcpd.conf"\n')
    loaded = FarmConfig.load(toml)
    assert (loaded.dhcp, loaded.dhcpd_conf) == ("external", Path("/srv/dhcpd.conf"))


def test_bridge_network_from_config_picks_the_dhcp_server(tmp_path: Path) -> None:
    conf = _write(tmp_path, OK_CONF)
    farm = BridgeNetwork.from_config(FarmConfig(state_dir=tmp_path))
    assert isinstance(farm.dhcp, DhcpServer) and not farm.external
    ext = BridgeNetwork.from_config(
        FarmConfig(state_dir=tmp_path, dhcp="external", dhcpd_conf=conf)
    )
    assert isinstance(ext.dhcp, ExternalDhcp) and ext.external
    assert ext.dhcp.conf == conf
    assert ext.reservation("qemu2") == ("52:54:00:fa:00:02", ext.plan.ip_for(2))


def test_external_up_checks_before_creating_the_bridge(tmp_path: Path) -> None:
    """A failed check leaves nothing behind: the bridge is never touched."""
    net = BridgeNetwork(PLAN, tmp_path, external_conf=_write(tmp_path, ""))
    created: list[str] = []
    net.bridge.create = lambda: created.append("bridge")  # type: ignore[method-assign]
    with pytest.raises(NetworkError, match="lacks 3"):
        net.up()
    assert created == []
    _write(tmp_path, OK_CONF)
    net.up()
    assert created == ["bridge"]
