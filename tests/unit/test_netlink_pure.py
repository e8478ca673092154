"""Pure logic of the netlink layer: VTEP MAC derivation, interface choice (on fake netlink
messages), masquerade rule order. No kernel objects are touched."""

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import ipmasq, netlink


def test_vtep_mac_is_stable_unicast_and_locally_administered():
    mac = netlink.deterministic_vtep_mac("192.168.205.10", 100)
    assert mac == netlink.deterministic_vtep_mac("192.168.205.10", 100)
    first_octet = int(mac.split(":", 1)[0], 16)
    assert first_octet & 0x01 == 0 and first_octet & 0x02 == 0x02
    assert len(mac.split(":")) == 6 and mac == mac.lower()


def test_vtep_mac_depends_on_ip_and_vni():
    macs = {netlink.deterministic_vtep_mac(ip, vni)
            for ip in ("10.0.0.1", "10.0.0.2", "10.0.1.1") for vni in (1, 2, 100)}
    assert len(macs) == 9


class Msg(dict):
    """Enough of a pyroute2 message: header fields by key, attributes by get_attr()."""

    def __init__(self, attrs, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


class FakeIPRoute:
    def __init__(self, links, addresses, default_oif=None):
        self.links = [Msg({"IFLA_IFNAME": name, "IFLA_MTU": mtu}, index=index)
                      for index, name, mtu in links]
        self.addresses = [Msg({"IFA_LOCAL": address}, index=index, prefixlen=24)
                          for index, address in addresses]
        self.routes = [Msg({"RTA_OIF": default_oif}, dst_len=0)] if default_oif else []

    def get_links(self, *args):
        return self.links

    def get_addr(self, family=None):
        return self.addresses

    def get_routes(self, family=None, table=None):
        return self.routes


LINKS = [(1, "lo", 65536), (2, "eth0", 1500), (3, "eth1", 9000)]
ADDRESSES = [(1, "127.0.0.1"), (2, "192.168.1.5"), (3, "169.254.3.3"), (3, "10.1.0.7")]


def choose(ifaces=(), regexes=(), default_oif=2, addresses=None):
    fake = FakeIPRoute(LINKS, ADDRESSES if addresses is None else addresses, default_oif)
    return netlink.select_interface(ifaces, regexes, ipr=fake)


def test_default_route_interface_without_flags():
    assert choose() == ("eth0", 2, "192.168.1.5", 1500)


def test_global_address_preferred_over_link_local():
    assert choose(["eth1"]) == ("eth1", 3, "10.1.0.7", 9000)
    assert choose(["eth1"], addresses=[(3, "169.254.3.3")]).address == "169.254.3.3"


def test_iface_entries_tried_in_order_ip_or_name():
    assert choose(["eth9", "10.1.0.7", "eth0"]) == ("eth1", 3, "10.1.0.7", 9000)
    assert choose(["169.254.3.3"]).address == "169.254.3.3"  # an IP given is the IP used


def test_regex_matches_addresses_before_names():
    assert choose(regexes=[r"^eth"]).name == "eth0"
    assert choose(regexes=[r"^10\.1\."]).name == "eth1"
    assert choose(regexes=[r"eth1"]).name == "eth1"
    assert choose(ifaces=["eth9"], regexes=["nomatch", r"^192\.168"]).name == "eth0"


def test_no_match_gives_flanneld_message():
    with pytest.raises(netlink.InterfaceError) as error:
        choose(["eth9"], ["^wlan"])
    assert str(error.value).startswith(netlink.NO_INTERFACE_MESSAGE + " (-iface eth9, -iface-regex ^wlan; ")
    assert str(error.value).endswith("this host has: lo 127.0.0.1, eth0 192.168.1.5, eth1 10.1.0.7 169.254.3.3)")


def test_no_default_route_and_no_address_errors():
    with pytest.raises(netlink.InterfaceError, match="no default route"):
        choose(default_oif=None)
    with pytest.raises(netlink.InterfaceError, match="failed to find IPv4 address for interface eth0"):
        choose(addresses=[(3, "10.1.0.7")])


def test_masquerade_rules_follow_flanneld_order():
    rules = ipmasq.masquerade_rules("10.5.0.0/16", "10.5.7.0/24")
    assert [" ".join(rule).replace(' -m comment --comment flanneld masq', '') for rule in rules] == [
        "-s 10.5.0.0/16 -d 10.5.0.0/16 -j RETURN",
        "-s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE",
        "! -s 10.5.0.0/16 -d 10.5.7.0/24 -j RETURN",
        "! -s 10.5.0.0/16 -d 10.5.0.0/16 -j MASQUERADE"]


def test_optional_ipr_opens_a_private_session_only_when_none_given(monkeypatch):
    opened = []

    class Recorder:
        def close(self):
            opened.append("closed")

    monkeypatch.setattr(netlink, "IPRoute", lambda: opened.append("opened") or Recorder())

    @netlink.optional_ipr
    def probe(first, ipr=None, last="default"):
        return first, type(ipr).__name__, last

    assert probe(1, "given") == (1, "str", "default") and opened == []
    assert probe(1, ipr="given", last="x") == (1, "str", "x") and opened == []
    assert probe(1, None, "x") == (1, "Recorder", "x")
    assert probe(1, last="y") == (1, "Recorder", "y")
    assert opened == ["opened", "closed", "opened", "closed"]
