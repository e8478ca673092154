"""Pure lease logic: key format, JSON format, free-subnet search."""

import json
import random

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    MAX_LEASE_BYTES, Lease, LeaseAttrs, free_subnets, lease_problem, parse_subnet_key, subnet_key)


def _config(**extra):
    document = {"Network": "10.0.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
    document.update(extra)
    return parse_network_config(document)


def test_key_round_trip():
    assert subnet_key(IPNetwork("10.5.34.0/24")) == "10.5.34.0-24"
    assert parse_subnet_key("/coreos.com/network/subnets/10.5.34.0-24") == IPNetwork("10.5.34.0/24")


@pytest.mark.parametrize("key", ["10.5.34.0", "10.5.34.0-33", "garbage", "10.5.34-24", "300.1.1.1-24",
                                 "10.5.34.7-24", "010.5.34.0-24", "10.5.34.0-024", "10.5.34.0-24 "])
def test_bad_keys_are_rejected(key):
    with pytest.raises(ValueError):
        parse_subnet_key(key)


def test_json_matches_flanneld_byte_for_byte():
    vxlan = LeaseAttrs("10.37.7.195", "vxlan", "82:4b:b6:2f:54:4e")
    assert vxlan.to_json() == '{"PublicIP":"10.37.7.195","BackendType":"vxlan","BackendData":{"VtepMAC":"82:4b:b6:2f:54:4e"}}'
    assert LeaseAttrs("10.0.0.1", "host-gw").to_json() == '{"PublicIP":"10.0.0.1","BackendType":"host-gw"}'
    assert LeaseAttrs.from_json(vxlan.to_json()) == vxlan


def test_other_backend_data_round_trips_as_go_writes_it():
    """An extension lease's BackendData is the JSON string its PreStartupCommand printed; Go's
    json.Marshal writes non-ASCII as UTF-8 and escapes <, > and & (flanneld's bytes exactly)."""
    data = 'key=<a&b> "q" \\ é'
    extension = LeaseAttrs("10.0.0.1", "extension", backend_data=data)
    assert extension.to_json() == ('{"PublicIP":"10.0.0.1","BackendType":"extension","BackendData":'
                                   '"key=\\u003ca\\u0026b\\u003e \\"q\\" \\\\ é"}')
    assert LeaseAttrs.from_json(extension.to_json()).backend_data == data
    assert LeaseAttrs.from_json(extension.to_json()) == extension
    # No PreStartupCommand: no BackendData; one that printed nothing: an empty string.
    assert LeaseAttrs("10.0.0.1", "extension").to_json() == '{"PublicIP":"10.0.0.1","BackendType":"extension"}'
    empty = LeaseAttrs.from_json('{"PublicIP":"10.0.0.1","BackendType":"extension","BackendData":""}')
    assert empty.backend_data == "" and empty.to_json().endswith(',"BackendData":""}')
    # Any JSON value is kept as read (each backend checks what it reads); vxlan's stays its VtepMAC.
    assert LeaseAttrs.from_json('{"PublicIP":"10.0.0.1","BackendType":"extension","BackendData":[1]}'
                                ).backend_data == [1]
    assert LeaseAttrs.from_json(_vxlan_value()).backend_data is None


def test_json_from_upstream_udp_lease_and_case_folding():
    udp = LeaseAttrs.from_json('{"PublicIP":"10.0.0.1"}')
    assert udp.backend_type == "udp" and udp.to_json() == '{"PublicIP":"10.0.0.1"}'
    parsed = LeaseAttrs.from_json(json.dumps({"publicip": "10.0.0.2", "backendtype": "vxlan",
                                              "backenddata": {"vtepmac": "AA:BB:CC:DD:EE:FE"}}))
    assert parsed.vtep_mac == "aa:bb:cc:dd:ee:fe"


@pytest.mark.parametrize("backend_type", ["host-gw", "udp", "ipip", "alloc", "aws-vpc", "gce", "ali-vpc",
                                          "extension"])
def test_every_upstream_backend_type_is_read(backend_type):
    text = json.dumps({"PublicIP": "192.0.2.7", "BackendType": backend_type})
    assert LeaseAttrs.from_json(text).backend_type == backend_type


def _vxlan_value(**fields):
    value = {"PublicIP": "192.0.2.7", "BackendType": "vxlan", "BackendData": {"VtepMAC": "0e:00:00:00:00:01"}}
    value.update(fields)
    return json.dumps(value)


@pytest.mark.parametrize("text, message", [
    ("", "not JSON"),
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('"x"', "not a JSON object"),
    ('{"PublicIP": "nope"}', "PublicIP: \"nope\" is not an IPv4 address"),
    ('{"BackendType":"vxlan"}', "PublicIP: null is not an IPv4 address"),
    ('{"PublicIP": 167772161}', "PublicIP: 167772161 is not an IPv4 address"),
    (_vxlan_value(PublicIP="2001:db8::1"), "not an IPv4 address (the data plane is IPv4)"),
    (_vxlan_value(PublicIP="0.0.0.0"), "not a unicast address (it is in 0.0.0.0/8)"),
    (_vxlan_value(PublicIP="127.0.0.1"), "not a unicast address (it is in 127.0.0.0/8)"),
    (_vxlan_value(PublicIP="224.0.0.1"), "not a unicast address (it is in 224.0.0.0/4)"),
    (_vxlan_value(PublicIP="255.255.255.255"), "not a unicast address (it is in 240.0.0.0/4)"),
    (_vxlan_value(PublicIP=" 192.0.2.7"), "is not an IPv4 address"),
    (_vxlan_value(BackendData={"VtepMAC": "zz:zz"}), "VtepMAC: \"zz:zz\" is not a MAC address"),
    (_vxlan_value(BackendData={"VtepMAC": "01:00:5e:00:00:01"}), "VtepMAC: 01:00:5e:00:00:01 is a multicast MAC"),
    (_vxlan_value(BackendData={"VtepMAC": "ff:ff:ff:ff:ff:ff"}), "is a multicast MAC"),
    (_vxlan_value(BackendData={"VtepMAC": "00:00:00:00:00:00"}), "is the all-zero MAC"),
    (_vxlan_value(BackendData={"VtepMAC": ["0e:00:00:00:00:01"]}), "is not a MAC address"),
    (_vxlan_value(BackendData={}), "VtepMAC: null is not a MAC address"),
    (_vxlan_value(BackendData="0e:00:00:00:00:01"), "BackendData is not a JSON object"),
    (_vxlan_value(BackendType="VXLAN"), "BackendType \"VXLAN\" is not a flannel backend"),
    (_vxlan_value(BackendType="geneve"), "BackendType \"geneve\" is not a flannel backend"),
    (_vxlan_value(BackendType=7), "BackendType 7 is not a flannel backend"),
    ('{"PublicIP": "192.0.2.7", "x": "%s"}' % ("a" * MAX_LEASE_BYTES), "above the limit of 4096"),
    ('{"PublicIP": "192.0.2.7", "x": %s}' % ("[" * 9 + "]" * 9), "nests deeper than 8 levels"),
    ('{"PublicIP": "192.0.2.7", "x": %s}' % ("[" * 2000 + "]" * 2000), "nests deeper than 8 levels"),
])
def test_bad_values_raise_value_error_naming_the_field(text, message):
    with pytest.raises(ValueError) as caught:
        LeaseAttrs.from_json(text)
    assert message in str(caught.value)


def test_depth_count_ignores_brackets_inside_strings():
    text = '{"PublicIP": "192.0.2.7", "x": "%s\\"[[[["}' % ("[" * 50)
    assert LeaseAttrs.from_json(text).public_ip == "192.0.2.7"


@pytest.mark.parametrize("cidr, public_ip, message", [
    ("10.1.0.0/16", "192.0.2.1", "subnet 10.1.0.0/16 is not a /24 inside the Network 10.0.0.0/16"),
    ("10.0.0.0/8", "192.0.2.1", "is not a /24 inside the Network"),
    ("0.0.0.0/0", "192.0.2.1", "is not a /24 inside the Network"),
    ("192.168.7.0/24", "192.0.2.1", "subnet 192.168.7.0/24 is not a /24 inside the Network"),
    ("10.0.7.0/24", "10.0.9.1", "PublicIP 10.0.9.1 is inside the overlay network 10.0.0.0/16"),
])
def test_lease_problem_under_a_config(cidr, public_ip, message):
    problem = lease_problem(Lease(IPNetwork(cidr), LeaseAttrs(public_ip, "vxlan", "0e:00:00:00:00:01")), _config())
    assert message in problem
    assert lease_problem(_lease("10.0.7.0/24"), _config()) is None


def _lease(cidr, ip="192.0.2.1"):
    return Lease(IPNetwork(cidr), LeaseAttrs(ip, "vxlan", "02:00:00:00:00:01"))


def test_free_subnets_skip_leased_ones_and_ignore_keys_that_cannot_be_leases():
    taken = [_lease("10.0.1.0/24"), IPNetwork("10.0.3.0/24"), _lease("10.0.4.0/23"), IPNetwork("0.0.0.0/0"),
             IPNetwork("10.0.0.0/16"), IPNetwork("192.168.5.0/24")]
    free = free_subnets(_config(), taken, limit=4)
    assert [str(subnet) for subnet in free] == ["10.0.2.0/24", "10.0.4.0/24", "10.0.5.0/24", "10.0.6.0/24"]


def test_free_subnets_limit_is_first_hundred():
    free = free_subnets(_config(), [], limit=100)
    assert len(free) == 100 and str(free[0]) == "10.0.1.0/24" and str(free[-1]) == "10.0.100.0/24"


def test_free_subnets_exhausted():
    config = _config(SubnetMin="10.0.1.0", SubnetMax="10.0.2.0")
    assert free_subnets(config, [_lease("10.0.1.0/24"), _lease("10.0.2.0/24")]) == []


def test_random_pick_matches_brute_force_on_random_leases():
    rng = random.Random(7)
    config = _config()
    for _round in range(20):
        taken = rng.sample(range(1, 256), 120)
        leases = [_lease("10.0.%s.0/24" % octet) for octet in taken]
        expected = [IPNetwork("10.0.%s.0/24" % octet) for octet in range(1, 256) if octet not in taken][:100]
        assert free_subnets(config, leases) == expected
