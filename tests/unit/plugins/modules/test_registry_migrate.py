"""netlab.flannel.registry_migrate against a real etcd that serves both APIs (v2 on), and the
modules' etcd_api option: what v2 holds is copied to v3 with its remaining TTL, once."""

from __future__ import annotations

import json

import pytest

from support.etcdserver import RawV3Client, v3_call, _b64
from test_leases import PREFIX, lease_value, put, seed


@pytest.fixture
def both(etcd_endpoint):
    """The test etcd with a clean v3 keyspace too (its wipe clears v2 only)."""
    v3_call(etcd_endpoint, "/v3/kv/deleterange", {"key": _b64("\0"), "range_end": _b64("\0")})
    yield etcd_endpoint
    v3_call(etcd_endpoint, "/v3/kv/deleterange", {"key": _b64("\0"), "range_end": _b64("\0")})


def test_copies_config_and_leases_with_their_ttl_once(both, run_module):
    seed(both)
    raw = RawV3Client(both)
    dry = run_module("registry_migrate", dict(etcd_api="v3", endpoints=[both]), check_mode=True, diff=True)
    assert dry["changed"] is True and [item["subnet"] for item in dry["copied"]] == ["10.13.48.0/20", "10.15.64.0/20"]
    with pytest.raises(KeyError):
        raw.read(PREFIX + "/config")  # check mode wrote nothing
    result = run_module("registry_migrate", dict(etcd_api="v3", endpoints=[both]), diff=True)
    assert result["changed"] is True and result["config_copied"] is True
    copied = dict((item["subnet"], item) for item in result["copied"])
    assert copied["10.13.48.0/20"]["ttl"] is None  # a reservation stays one
    assert 590 < copied["10.15.64.0/20"]["ttl"] <= 600
    assert [item["key"] for item in result["skipped"]] == [PREFIX + "/subnets/junk"]
    # Stored as flanneld writes it (compact JSON): the same object.
    assert json.loads(raw.read(PREFIX + "/subnets/10.15.64.0-20").value) == json.loads(
        lease_value("192.168.205.10", "aa:aa:aa:aa:aa:01"))
    assert 590 < raw.read(PREFIX + "/subnets/10.15.64.0-20").ttl <= 600
    assert raw.read(PREFIX + "/subnets/10.13.48.0-20").ttl is None
    assert json.loads(raw.read(PREFIX + "/config").value)["SubnetLen"] == 20
    assert PREFIX + "/subnets/10.15.64.0-20" in result["diff"][1]["after"]
    again = run_module("registry_migrate", dict(etcd_api="v3", endpoints=[both]))
    assert again["changed"] is False and again["copied"] == []
    assert again["unchanged"] == ["10.13.48.0/20", "10.15.64.0/20"]
    # The other modules read the copy through etcd_api=v3.
    listed = run_module("lease_info", dict(etcd_api="v3", endpoints=[both]))
    assert [lease["subnet"] for lease in listed["leases"]] == ["10.13.48.0/20", "10.15.64.0/20"]
    assert listed["config"]["SubnetLen"] == 20 and 590 < listed["leases"][1]["ttl"] <= 600


def test_a_different_v3_lease_is_left_and_reported(both, run_module):
    put(both, PREFIX + "/subnets/10.15.64.0-20", lease_value("192.168.205.10", "aa:aa:aa:aa:aa:01"), ttl=600)
    RawV3Client(both).write(PREFIX + "/subnets/10.15.64.0-20", lease_value("192.168.205.12", "aa:aa:aa:aa:aa:03"))
    result = run_module("registry_migrate", dict(etcd_api="v3", endpoints=[both]))
    assert result["changed"] is False and result["conflicts"][0]["subnet"] == "10.15.64.0/20"
    assert "192.168.205.12" in RawV3Client(both).read(PREFIX + "/subnets/10.15.64.0-20").value


def test_refuses_v2_as_the_target(both, run_module):
    result = run_module("registry_migrate", dict(endpoints=[both]))
    assert result["failed"] and "etcd_api: must be v3" in result["msg"]
