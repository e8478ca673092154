"""Property-based tests: whatever anyone writes under <prefix>/subnets, the lease parser either
returns a lease that fits the Network or says why not, and the agent's event handling never
programs a route, neighbour or FDB entry outside the Network or over this host.

The registry and the agent are the real ones; only etcd's answers (python-etcd's own EtcdResult)
and the kernel tables (a dict standing in for netlink) are simulated, as this is pure logic.
"""

import json
import string

import etcd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.route_backend import RouteBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.host_gw import HostGwBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.udp import UdpBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.daemon import Agent
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    KNOWN_BACKEND_TYPES, Lease, LeaseAttrs, ipv4_unicast_problem, parsed_address, unicast_mac_problem)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry.v2 import EtcdRegistry

PREFIX = "/coreos.com/network"
VXLAN = parse_network_config({"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0",
                              "SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100}})
HOST_GW = parse_network_config({"Network": "10.6.0.0/16", "Backend": {"Type": "host-gw"}})
UDP = parse_network_config({"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0",
                            "SubnetMax": "10.99.0.0", "Backend": {"Type": "udp"}})
PUBLIC_IP = "192.168.205.10"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies ----------------------------------------------------------------------------------

octet = st.integers(0, 255)
dotted = st.tuples(octet, octet, octet, octet).map(lambda parts: "%d.%d.%d.%d" % parts)
ODD_ADDRESSES = ["10.10.0.5", "10.0.0.1", PUBLIC_IP, "192.168.205.11", "127.0.0.1", "0.0.0.0",
                 "255.255.255.255", "224.0.0.5", "2001:db8::1", "::ffff:10.0.0.1", " 1.2.3.4", "1.2.3"]
addresses = st.one_of(dotted, st.sampled_from(ODD_ADDRESSES))


def _near_network(config):
    """Keys aimed at the Network: the right length, a wrong one, or covering it."""
    network = config.network
    inside = st.integers(0, network.size - 1).map(lambda offset: IPAddress(network.first + offset))
    return st.tuples(inside, st.sampled_from([config.subnet_len] * 4 + [0, 8, network.prefixlen, 24, 32])).map(
        lambda pair: "%s-%d" % (IPNetwork("%s/%d" % pair).cidr.ip, pair[1]))


def keys(config):
    return st.one_of(
        _near_network(config),
        st.tuples(dotted, st.integers(0, 40)).map(lambda pair: "%s-%d" % pair),
        st.text(alphabet=string.printable, max_size=30),
        st.sampled_from(["", "0.0.0.0-0", "10.10.0.0-20", "10.10.0.5-20", "010.10.0.0-20", "10.10.0.0-020"]),
    ).map(lambda name: "%s/subnets/%s" % (PREFIX, name))


macs = st.one_of(
    st.binary(min_size=6, max_size=6).map(lambda raw: ":".join("%02x" % byte for byte in raw)),
    st.sampled_from(["zz:zz", "", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "0E:00:00:00:00:01",
                     "0e-00-00-00-00-01", "0e:00:00:00:00:01:02"]),
    st.integers(), st.none(), st.text(max_size=20))
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10))
any_json = st.recursive(json_leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=20)
lease_objects = st.fixed_dictionaries({}, optional={
    "PublicIP": st.one_of(addresses, any_json),
    "BackendType": st.one_of(st.sampled_from(KNOWN_BACKEND_TYPES + ("VXLAN", "", "hostgw")), any_json),
    "BackendData": st.one_of(st.fixed_dictionaries({}, optional={"VtepMAC": macs, "vtepmac": macs}), any_json),
    "extra": any_json,
})
values = st.one_of(lease_objects.map(json.dumps), any_json.map(json.dumps),
                   st.text(max_size=60), st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth))


def node(key, value, action="set", index=7):
    return etcd.EtcdResult(action=action, node={"key": key, "value": value, "modifiedIndex": index, "ttl": 600})


def registry():
    return EtcdRegistry("http://127.0.0.1:1")  # never contacted: answers come from FakeWatch


# ---- the parser ----------------------------------------------------------------------------------

@SETTINGS
@given(keys(VXLAN), values)
def test_any_key_and_value_yield_a_lease_inside_the_network_or_a_value_error(key, value):
    try:
        lease = registry()._lease_from_node(node(key, value), VXLAN)
    except ValueError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert lease.subnet in VXLAN.network and lease.subnet.prefixlen == VXLAN.subnet_len
    assert "%s/subnets/%s-%d" % (PREFIX, lease.subnet.ip, lease.subnet.prefixlen) == key
    assert ipv4_unicast_problem(lease.attrs.public_ip) is None
    assert IPAddress(lease.attrs.public_ip) not in VXLAN.network
    assert lease.attrs.backend_type in KNOWN_BACKEND_TYPES
    if lease.attrs.backend_type == "vxlan" or lease.attrs.vtep_mac is not None:
        assert unicast_mac_problem(lease.attrs.vtep_mac) is None


@SETTINGS
@given(values)
def test_a_parsed_value_writes_back_as_it_reads(value):
    try:
        attrs = LeaseAttrs.from_json(value)
    except ValueError:
        return
    assert LeaseAttrs.from_json(attrs.to_json()) == attrs


# ---- the agent's event handling ------------------------------------------------------------------

class FakeKernel:
    """The three tables the backends write, standing in for netlink."""

    LOCAL = {IPAddress(PUBLIC_IP), IPAddress("10.10.0.0"), IPAddress("10.10.0.1"), IPAddress("10.50.0.1"),
             IPAddress("10.6.1.1"), IPAddress("10.6.9.1")}

    def __init__(self, monkeypatch):
        self.routes, self.neighbours, self.fdb = {}, {}, set()
        patches = {
            "local_ipv4_addresses": lambda ipr=None: set(self.LOCAL),
            "routes_via": lambda index, ipr=None, inside=None: [
                route for route in self.routes.values()
                if route.index == index and (inside is None or IPNetwork(route.dst) in inside)],
            "permanent_neighbours": lambda index, ipr=None: dict(self.neighbours),
            "fdb_entries": lambda index, ipr=None: sorted(self.fdb),
            "replace_route": lambda route, ipr=None: self.routes.__setitem__((route.dst, route.index), route),
            "delete_route": lambda route, ipr=None: self.routes.pop((route.dst, route.index), None),
            "replace_neighbour": lambda index, ip, mac, ipr=None: self.neighbours.__setitem__(ip, mac),
            "delete_neighbour": lambda index, ip, ipr=None: self.neighbours.pop(ip, None),
            "replace_fdb": lambda index, mac, dst, ipr=None: self.fdb.add((mac, dst)),
            "delete_fdb": lambda index, mac, dst, ipr=None: self.fdb.discard((mac, dst)),
            "direct_route": lambda ip, ipr=None: None,
        }
        for name, function in patches.items():
            monkeypatch.setattr(netlink, name, function)

    def assert_in_scope(self, config, own_subnet):
        for route in self.routes.values():
            dst = IPNetwork(route.dst)
            assert dst in config.network and dst.prefixlen == config.subnet_len, route
            assert not (dst.first <= own_subnet.last and own_subnet.first <= dst.last), route
            assert not any(address in dst for address in self.LOCAL), route
        for ip, mac in self.neighbours.items():
            assert IPAddress(ip) in config.network and unicast_mac_problem(mac) is None
        for mac, dst in self.fdb:
            assert IPAddress(dst) not in config.network and IPAddress(dst) not in self.LOCAL
            assert unicast_mac_problem(mac) is None


class FakeWatch:
    """Answers the agent's watch (the v2 registry's, registry/v2_watch.py) with the next prepared
    etcd result."""

    def __init__(self, results):
        self.results = list(results)

    def read(self, key, wait_index, timeout):
        return self.results.pop(0)


class Options:
    host_id = "test"
    reconcile_interval = 3600
    subnet_lease_renew_margin = 60
    ip_masq = False
    subnet_file = "/nonexistent/subnet.env"
    vxlan_offload = "auto"


def _agent(config, backend_class, events):
    agent = Agent(Options(), registry())
    agent.registry._watches = [FakeWatch(events)]
    own_subnet = IPNetwork("%s/%d" % (config.subnet_min, config.subnet_len))
    extra = {"workers": 1} if backend_class is UdpBackend else {}
    backend = backend_class(config, ("eth0", 2, PUBLIC_IP, 1500), PUBLIC_IP, ipr=object(), **extra)
    backend.device_index = 3
    backend.subnet = own_subnet
    agent.in_force.config, agent.in_force.backend = config, backend
    agent.keeper.use_backend(PUBLIC_IP, {"backend_type": backend.backend_type, "vtep_mac": "0e:00:00:00:00:10"})
    agent.keeper.lease = Lease(own_subnet, agent.keeper.attrs, ttl=600)
    agent.keeper.renew_at, agent.reconcile_at = None, float("inf")
    agent.reacquired = []
    agent.reacquire = agent.reacquired.append  # etcd work, outside this test's scope
    return agent


actions = st.sampled_from(["set", "create", "update", "compareAndSwap", "delete", "expire", "compareAndDelete"])


def _events(config):
    return st.lists(st.tuples(keys(config), values, actions), min_size=1, max_size=12).map(
        lambda items: [node(key, value, action, index) for index, (key, value, action) in enumerate(items, 1)])


def _run(config, backend_class, events):
    with pytest.MonkeyPatch.context() as monkeypatch:  # fresh for every generated example
        kernel = FakeKernel(monkeypatch)
        agent = _agent(config, backend_class, events)
        for _event in events:
            agent.step()
            kernel.assert_in_scope(config, agent.keeper.lease.subnet)
        # A full resync from what the agent holds must agree (the device repair is left out).
        RouteBackend.sync(agent.in_force.backend, agent.peer_table.peers)
        kernel.assert_in_scope(config, agent.keeper.lease.subnet)
        assert agent.index == len(events)


@settings(SETTINGS, max_examples=150)
@given(events=_events(VXLAN))
def test_vxlan_agent_never_programs_outside_the_network(events):
    _run(VXLAN, VxlanBackend, events)


@settings(SETTINGS, max_examples=150)
@given(events=_events(HOST_GW))
def test_host_gw_agent_never_programs_outside_the_network(events):
    _run(HOST_GW, HostGwBackend, events)


@settings(SETTINGS, max_examples=100)
@given(events=_events(UDP))
def test_udp_agent_never_forwards_outside_the_network(events):
    """udp has no kernel entry per peer: its workers' forwarding table must stay in scope."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        kernel = FakeKernel(monkeypatch)
        agent = _agent(UDP, UdpBackend, events)
        for _event in events:
            agent.step()
            for subnet, public_ip in agent.in_force.backend._routes.items():
                kernel.routes[(subnet, 0)] = netlink.Route(subnet, public_ip, 0, False)
                kernel.fdb.add(("0e:00:00:00:00:01", public_ip))  # the check for a gateway's scope
            kernel.assert_in_scope(UDP, agent.keeper.lease.subnet)
            kernel.routes.clear()
            kernel.fdb.clear()


def test_valid_peer_is_programmed_and_a_bad_overwrite_unprograms_it(monkeypatch):
    """The properties above must not pass by programming nothing at all."""
    good = '{"PublicIP":"192.168.205.11","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:11"}}'
    bad = '{"PublicIP":"192.168.205.11","BackendType":"vxlan","BackendData":{"VtepMAC":"zz:zz"}}'
    key = PREFIX + "/subnets/10.20.0.0-20"
    kernel = FakeKernel(monkeypatch)
    agent = _agent(VXLAN, VxlanBackend, [node(key, good, index=1), node(key, bad, index=2)])
    agent.step()
    assert [route.dst for route in kernel.routes.values()] == ["10.20.0.0/20"]
    assert kernel.fdb == {("0e:00:00:00:00:11", "192.168.205.11")}
    agent.step()
    assert kernel.routes == {} and kernel.fdb == set() and kernel.neighbours == {}
    assert agent.peer_table.peers == {} and list(agent.bad_leases.current) == [key]


def test_udp_valid_peer_is_forwarded_and_one_over_this_host_is_not():
    with pytest.MonkeyPatch.context() as monkeypatch:
        FakeKernel(monkeypatch)
        events = [node(PREFIX + "/subnets/10.20.0.0-20", '{"PublicIP":"192.168.205.11"}', index=1),
                  node(PREFIX + "/subnets/10.50.0.0-20", '{"PublicIP":"192.168.205.12"}', index=2)]
        agent = _agent(UDP, UdpBackend, events)
        agent.step()
        agent.step()
        assert agent.in_force.backend._routes == {"10.20.0.0/20": "192.168.205.11"}  # 10.50.0.1 is this host's


# ---- the PublicIP's reading, answered again for the same text -----------------------------------

def _oracle_unicast_problem(text):
    """ipv4_unicast_problem as it was written with IPNetwork lookups, for comparison."""
    try:
        address = IPAddress(text, flags=0)
    except Exception:
        return "not an address"
    if address.version != 4:
        return "not IPv4"
    for block in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"):
        if address in IPNetwork(block):
            return block
    return None


@SETTINGS
@given(st.lists(st.one_of(addresses, st.sampled_from(["010.1.2.3", "1.2.3.4 ", "", "::1"])), max_size=8))
def test_parsed_address_answers_as_netaddr_whatever_came_before(texts):
    """parsed_address keeps the last text it parsed: any sequence of texts, repeated or not, gets
    netaddr's own answer (the same address, or an error), and ipv4_unicast_problem the same verdict
    as with IPNetwork lookups."""
    for text in texts + texts[::-1]:
        try:
            expected = IPAddress(text, flags=0)
        except Exception:
            expected = None
        try:
            got = parsed_address(text)
        except Exception:
            got = None
        assert (got, got.version if got else None) == (expected, expected.version if expected else None), text
        problem = ipv4_unicast_problem(text)
        oracle = _oracle_unicast_problem(text)
        assert (problem is None) == (oracle is None), (text, problem, oracle)
        if oracle not in (None, "not an address", "not IPv4"):
            assert problem.endswith("(it is in %s)" % oracle), problem
