"""Dual-stack leases (issue 24) in modern flanneld's exact formats: the key
10.5.16.0-24&fc00::-64, the value with PublicIPv6 and BackendV6Data, subnet.env's IPv6 lines;
the hostile-input rules for each; an IPv4-only lease written exactly as before."""

import json

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    Lease, LeaseAttrs, free_subnets, lease_problem, parse_lease_key, parse_subnet_key, subnet_key)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.subnet_env import (
    parse_subnet_env, previous_subnets, render_subnet_env)

# flannel's Documentation/reservations.md: a lease modern flanneld wrote (IPv4 only).
DOCUMENTED_LEASE = ('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                    '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
# The same host dual-stack, fields as modern flanneld's LeaseAttrs and vxlanLeaseAttrs marshal them.
DUAL_STACK_LEASE = ('{"PublicIP":"192.168.64.3","PublicIPv6":"fd00:205::3","BackendType":"vxlan",'
                    '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
                    '"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}')
# flannel's Documentation/configuration.md, "Dual-stack": the subnet.env flanneld writes.
DOCUMENTED_SUBNET_ENV = ("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n"
                         "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n"
                         "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
DUAL = parse_network_config({"Network": "10.5.0.0/16", "EnableIPv6": True, "IPv6Network": "fc00::/48",
                             "Backend": {"Type": "vxlan"}})


def test_dual_stack_key_is_read_and_written_as_modern_flanneld_names_it():
    subnets = parse_lease_key("/coreos.com/network/subnets/10.5.16.0-24&fc00::-64")
    assert subnets == (IPNetwork("10.5.16.0/24"), IPNetwork("fc00::/64"))
    assert subnet_key(*subnets) == "10.5.16.0-24&fc00::-64"
    assert parse_subnet_key("10.5.16.0-24&fc00::-64") == IPNetwork("10.5.16.0/24")
    assert parse_lease_key("10.5.16.0-24") == (IPNetwork("10.5.16.0/24"), None)
    assert subnet_key(IPNetwork("10.5.16.0/24")) == "10.5.16.0-24"


@pytest.mark.parametrize("key, rule", [
    ("10.5.16.0-24&FC00::-64", "not a subnet lease key (A.B.C.D-LEN or A.B.C.D-LEN&IPv6-LEN)"),
    ("10.5.16.0-24&fc00:0::-64", "is not written as flannel writes 10.5.16.0-24&fc00::-64"),
    ("10.5.16.0-24&fc00::1-64", "is not written as flannel writes 10.5.16.0-24&fc00::-64"),
    ("10.5.16.0-24&fc00::-129", "not a subnet lease key"),
    ("10.5.16.0-24&fc00::-064", "is not written as flannel writes 10.5.16.0-24&fc00::-64"),
    ("10.5.16.0-24&", "not a subnet lease key"),
    ("10.5.16.0-24&fc00::-64&fd00::-64", "not a subnet lease key"),
    ("10.5.16.0-24&::ffff:10.5.16.0-120", "not a subnet lease key"),
    ("10.5.16.0-24&:::-64", "not a subnet lease key"),
    ("10.5.16.1-24&fc00::-64", "is not written as flannel writes 10.5.16.0-24&fc00::-64"),
])
def test_other_spellings_are_not_keys(key, rule):
    with pytest.raises(ValueError) as caught:
        parse_lease_key(key)
    assert rule in str(caught.value)


@pytest.mark.parametrize("text", [DOCUMENTED_LEASE, DUAL_STACK_LEASE])
def test_modern_values_are_read_and_written_back_byte_for_byte(text):
    attrs = LeaseAttrs.from_json(text)
    assert attrs.to_json() == text
    assert (attrs.public_ip, attrs.vtep_mac, attrs.vni) == ("192.168.64.3", "c6:d2:32:6f:8f:44", 1)


def test_dual_stack_value_fields():
    attrs = LeaseAttrs.from_json(DUAL_STACK_LEASE)
    assert (attrs.public_ipv6, attrs.vtep_mac_v6, attrs.vni_v6) == ("fd00:205::3", "c6:d2:32:6f:8f:45", 1)


def test_ipv4_only_value_is_v0_10_s_exactly():
    text = '{"PublicIP":"192.168.64.3","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}'
    assert LeaseAttrs.from_json(text).to_json() == text
    assert LeaseAttrs("192.168.64.3", "vxlan", "c6:d2:32:6f:8f:44").to_json() == text
    ours = LeaseAttrs("192.168.64.3", "vxlan", "c6:d2:32:6f:8f:44", modern_format=True, vni=1)
    assert ours.to_json() == DOCUMENTED_LEASE


@pytest.mark.parametrize("change, rule", [
    (dict(PublicIPv6="fe80::1"), "lease PublicIPv6: fe80::1 is not a unicast address (it is in fe80::/10)"),
    (dict(PublicIPv6="::1"), "lease PublicIPv6: ::1 is not a unicast address"),
    (dict(PublicIPv6="ff02::1"), "lease PublicIPv6: ff02::1 is not a unicast address (it is in ff00::/8)"),
    (dict(PublicIPv6="192.168.64.3"), 'lease PublicIPv6: "192.168.64.3" is not an IPv6 address'),
    (dict(PublicIPv6="fd00::3%eth0"), 'lease PublicIPv6: "fd00::3%eth0" is not an IPv6 address'),
    (dict(PublicIPv6=7), "lease PublicIPv6: 7 is not an IPv6 address"),
    (dict(BackendV6Data={"VNI": 1, "VtepMAC": "c7:d2:32:6f:8f:45"}),
     "lease BackendV6Data VtepMAC: c7:d2:32:6f:8f:45 is a multicast MAC address"),
    (dict(BackendV6Data={"VNI": -1, "VtepMAC": "c6:d2:32:6f:8f:45"}), "lease BackendV6Data VNI: -1 is not a VNI"),
    (dict(BackendV6Data="c6:d2:32:6f:8f:45"), "lease BackendV6Data is not a JSON object"),
    (dict(BackendData={"VNI": True, "VtepMAC": "c6:d2:32:6f:8f:44"}), "lease BackendData VNI: true is not a VNI"),
])
def test_hostile_dual_stack_values_are_refused_naming_the_field(change, rule):
    data = dict(json.loads(DUAL_STACK_LEASE), **change)
    with pytest.raises(ValueError) as caught:
        LeaseAttrs.from_json(json.dumps(data))
    assert str(caught.value).startswith(rule), str(caught.value)


def _lease(key, text=DUAL_STACK_LEASE):
    subnet, ipv6_subnet = parse_lease_key(key)
    return Lease(subnet, LeaseAttrs.from_json(text), ttl=100, ipv6_subnet=ipv6_subnet)


@pytest.mark.parametrize("key, text, problem", [
    ("10.5.16.0-24&fc00:0:0:1::-64", DUAL_STACK_LEASE, None),
    ("10.5.16.0-24", DOCUMENTED_LEASE, None),  # a peer without IPv6, such as upstream v0.10
    ("10.5.16.0-24&fc00:0:0:1::-80", DUAL_STACK_LEASE, "IPv6 subnet fc00:0:0:1::/80 is not a /64 inside the "
                                                       "IPv6Network fc00::/48"),
    ("10.5.16.0-24&fd00:0:0:1::-64", DUAL_STACK_LEASE, "IPv6 subnet fd00:0:0:1::/64 is not a /64 inside the "
                                                       "IPv6Network fc00::/48"),
    ("10.5.16.0-24&fc00:0:0:1::-64", DUAL_STACK_LEASE.replace("fd00:205::3", "fc00:0:0:9::3"),
     "PublicIPv6 fc00:0:0:9::3 is inside the overlay IPv6 network fc00::/48"),
])
def test_lease_checks_under_a_dual_stack_config(key, text, problem):
    assert lease_problem(_lease(key, text), DUAL) == problem


def test_ipv6_part_is_not_checked_when_ipv6_is_off():
    ipv4_only = parse_network_config({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}})
    assert lease_problem(_lease("10.5.16.0-24&fd00:0:0:1::-80"), ipv4_only) is None


def test_free_ipv6_subnets_skip_every_taken_key_in_address_order():
    taken = [IPNetwork("fc00:0:0:1::/64"), IPNetwork("fc00:0:0:3::/64"), IPNetwork("fc00::/56"),  # not /64: ignored
             IPNetwork("10.5.1.0/24")]
    assert [str(subnet) for subnet in free_subnets(DUAL.ipv6, taken, limit=3)] == [
        "fc00:0:0:2::/64", "fc00:0:0:4::/64", "fc00:0:0:5::/64"]


def test_subnet_env_as_documented_and_ipv4_only_as_before(tmp_path):
    assert render_subnet_env(IPNetwork("10.42.0.0/16"), IPNetwork("10.42.0.0/24"), 1450, True,
                             IPNetwork("2001:cafe:42::/56"), IPNetwork("2001:cafe:42::/64")) == DOCUMENTED_SUBNET_ENV
    assert render_subnet_env(IPNetwork("10.42.0.0/16"), IPNetwork("10.42.0.0/24"), 1450, True) == (
        "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    path = tmp_path / "subnet.env"
    path.write_text(DOCUMENTED_SUBNET_ENV)
    assert previous_subnets(str(path)) == (IPNetwork("10.42.0.0/24"), IPNetwork("2001:cafe:42::/64"))
    path.write_text(DOCUMENTED_SUBNET_ENV.replace("FLANNEL_IPV6_SUBNET=2001:cafe:42::1/64", "FLANNEL_IPV6_SUBNET=10.1.1.1/24"))
    assert previous_subnets(str(path)) == (IPNetwork("10.42.0.0/24"), None)
    assert parse_subnet_env(DOCUMENTED_SUBNET_ENV)["FLANNEL_IPV6_NETWORK"] == "2001:cafe:42::/56"


def test_a_dual_stack_lease_claims_its_ipv6_identities_only_on_a_dual_stack_network():
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.peer_identity import lease_identities

    attrs = LeaseAttrs.from_json(DUAL_STACK_LEASE)
    assert lease_identities("vxlan", attrs) == [("VtepMAC", "c6:d2:32:6f:8f:44")]
    both_macs = [("VtepMAC", "c6:d2:32:6f:8f:44"), ("VtepMAC", "c6:d2:32:6f:8f:45")]
    assert lease_identities("vxlan", attrs, ipv6=True) == both_macs
    host_gw = LeaseAttrs("192.168.64.3", "host-gw", public_ipv6="fd00:205::3")
    both_addresses = [("PublicIP", "192.168.64.3"), ("PublicIP", "fd00:205::3")]
    assert lease_identities("host-gw", host_gw, ipv6=True) == both_addresses
    assert lease_identities("vxlan", host_gw, ipv6=True) == both_addresses  # direct routes
    assert lease_identities("alloc", attrs, ipv6=True) == [("PublicIP", "192.168.64.3")]
