"""Pure lease logic: key format, JSON format, free-subnet search."""

import json
import random

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    Lease, LeaseAttrs, free_subnets, parse_subnet_key, subnet_key)


def _config(**extra):
    document = {"Network": "10.0.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
    document.update(extra)
    return parse_network_config(document)


def test_key_round_trip():
    assert subnet_key(IPNetwork("10.5.34.0/24")) == "10.5.34.0-24"
    assert parse_subnet_key("/coreos.com/network/subnets/10.5.34.0-24") == IPNetwork("10.5.34.0/24")


@pytest.mark.parametrize("key", ["10.5.34.0", "10.5.34.0-33", "garbage", "10.5.34-24", "300.1.1.1-24"])
def test_bad_keys_are_rejected(key):
    with pytest.raises(ValueError):
        parse_subnet_key(key)


def test_json_matches_flanneld_byte_for_byte():
    vxlan = LeaseAttrs("10.37.7.195", "vxlan", "82:4b:b6:2f:54:4e")
    assert vxlan.to_json() == '{"PublicIP":"10.37.7.195","BackendType":"vxlan","BackendData":{"VtepMAC":"82:4b:b6:2f:54:4e"}}'
    assert LeaseAttrs("10.0.0.1", "host-gw").to_json() == '{"PublicIP":"10.0.0.1","BackendType":"host-gw"}'
    assert LeaseAttrs.from_json(vxlan.to_json()) == vxlan


def test_json_from_upstream_udp_lease_and_case_folding():
    assert LeaseAttrs.from_json('{"PublicIP":"10.0.0.1"}').backend_type is None
    parsed = LeaseAttrs.from_json(json.dumps({"publicip": "10.0.0.2", "backendtype": "vxlan",
                                              "backenddata": {"vtepmac": "aa:bb:cc:dd:ee:ff"}}))
    assert parsed.vtep_mac == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"PublicIP": "nope"}', '{"BackendType":"vxlan"}'])
def test_unparsable_values_raise_value_error(text):
    with pytest.raises(ValueError):
        LeaseAttrs.from_json(text)


def _lease(cidr, ip="192.0.2.1"):
    return Lease(IPNetwork(cidr), LeaseAttrs(ip, "vxlan", "02:00:00:00:00:01"))


def test_free_subnets_skip_leased_and_overlapping():
    leases = [_lease("10.0.1.0/24"), _lease("10.0.3.0/24"), _lease("10.0.4.0/23")]
    free = free_subnets(_config(), leases, limit=3)
    assert [str(subnet) for subnet in free] == ["10.0.2.0/24", "10.0.6.0/24", "10.0.7.0/24"]


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
