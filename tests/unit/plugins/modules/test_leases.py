"""netlab.flannel.lease_info and netlab.flannel.lease against a real etcd."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config

PREFIX = "/coreos.com/network"


def put(endpoint, key, value, ttl=None):
    data = {"value": value}
    if ttl:
        data["ttl"] = str(ttl)
    request = urllib.request.Request(endpoint + "/v2/keys" + key, method="PUT",
                                     data=urllib.parse.urlencode(data).encode())
    urllib.request.urlopen(request, timeout=5).read()


def keys(endpoint):
    try:
        with urllib.request.urlopen(endpoint + "/v2/keys" + PREFIX + "/subnets", timeout=5) as response:
            return sorted(node["key"] for node in json.loads(response.read())["node"].get("nodes", []))
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return []


def lease_value(ip, mac):
    return json.dumps({"PublicIP": ip, "BackendType": "vxlan", "BackendData": {"VtepMAC": mac}})


def seed(endpoint):
    put(endpoint, PREFIX + "/config", '{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "vxlan"}}')
    put(endpoint, PREFIX + "/subnets/10.15.64.0-20", lease_value("192.168.205.10", "aa:aa:aa:aa:aa:01"), ttl=600)
    put(endpoint, PREFIX + "/subnets/10.13.48.0-20", lease_value("192.168.205.11", "aa:aa:aa:aa:aa:02"))
    put(endpoint, PREFIX + "/subnets/junk", "x")


def test_lease_info_lists_leases_sorted(etcd_endpoint, run_module):
    seed(etcd_endpoint)
    result = run_module("lease_info", dict(endpoints=[etcd_endpoint]))
    assert result["changed"] is False
    assert [lease["subnet"] for lease in result["leases"]] == ["10.13.48.0/20", "10.15.64.0/20"]
    second, first = result["leases"]
    assert first["public_ip"] == "192.168.205.10"
    assert first["vtep_mac"] == "aa:aa:aa:aa:aa:01"
    assert first["backend_type"] == "vxlan"
    assert first["key"] == PREFIX + "/subnets/10.15.64.0-20"
    assert 0 < first["ttl"] <= 600
    assert second["ttl"] is None  # a reservation
    assert [item["key"] for item in result["skipped"]] == [PREFIX + "/subnets/junk"]
    assert result["config"]["SubnetLen"] == 20
    assert result["config_error"] is None
    # The digest the agent reports on /healthz for the same effective config.
    assert result["config_digest"] == parse_network_config(result["config"]).digest()
    assert result["index"] > 0


def test_lease_info_lists_a_dual_stack_lease_with_both_subnets(etcd_endpoint, run_module):
    seed(etcd_endpoint)
    value = ('{"PublicIP":"192.168.205.12","PublicIPv6":"fd00:205::12","BackendType":"vxlan",'
             '"BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:03"}}')
    put(etcd_endpoint, PREFIX + "/subnets/10.20.0.0-20&fd00:10:0:5::-64", value, ttl=600)
    result = run_module("lease_info", dict(endpoints=[etcd_endpoint]))
    dual = [lease for lease in result["leases"] if lease["subnet"] == "10.20.0.0/20"][0]
    assert (dual["key"], dual["ipv6_subnet"], dual["public_ipv6"], dual["vtep_mac"]) == (
        PREFIX + "/subnets/10.20.0.0-20&fd00:10:0:5::-64", "fd00:10:0:5::/64", "fd00:205::12", "aa:aa:aa:aa:aa:03")
    assert [lease["ipv6_subnet"] for lease in result["leases"] if lease is not dual] == [None, None]
    removed = run_module("lease", dict(endpoints=[etcd_endpoint], subnet=["10.20.0.0/20"]))
    assert [lease["key"] for lease in removed["removed"]] == [dual["key"]]
    assert keys(etcd_endpoint) == sorted(PREFIX + "/subnets/" + name for name in ("10.13.48.0-20", "10.15.64.0-20", "junk"))


def test_lease_info_on_empty_registry(etcd_endpoint, run_module):
    result = run_module("lease_info", dict(endpoints=[etcd_endpoint]))
    assert result["leases"] == [] and result["skipped"] == []
    assert result["config"] is None and result["config_digest"] is None
    assert "does not exist" in result["config_error"]


def test_lease_info_reports_invalid_stored_config(etcd_endpoint, run_module):
    put(etcd_endpoint, PREFIX + "/config", '{"Network": "10.0.0.0/8", "Backend": {"Type": "bogus"}}')
    result = run_module("lease_info", dict(endpoints=[etcd_endpoint]))
    assert result["config"] is None
    assert result["config_error"] == 'Backend.Type: unknown backend type: "bogus"; use one of: vxlan, host-gw, udp, wireguard, extension, alloc'


def test_lease_info_fails_when_etcd_is_unreachable(run_module):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = "http://127.0.0.1:%d" % sock.getsockname()[1]
    result = run_module("lease_info", dict(endpoints=[endpoint], timeout=2))
    assert result["failed"] is True
    assert "no etcd endpoint answered" in result["msg"]


def test_lease_removes_by_public_ip_idempotently(etcd_endpoint, run_module):
    seed(etcd_endpoint)
    args = dict(endpoints=[etcd_endpoint], public_ip=["192.168.205.10"])
    check = run_module("lease", args, check_mode=True, diff=True)
    assert check["changed"] is True
    assert [lease["subnet"] for lease in check["removed"]] == ["10.15.64.0/20"]
    assert PREFIX + "/subnets/10.15.64.0-20" in keys(etcd_endpoint)

    result = run_module("lease", args, diff=True)
    assert result["changed"] is True
    assert "10.15.64.0-20" in result["diff"]["before"]
    assert "10.15.64.0-20" not in result["diff"]["after"]
    assert keys(etcd_endpoint) == [PREFIX + "/subnets/10.13.48.0-20", PREFIX + "/subnets/junk"]

    again = run_module("lease", args, diff=True)
    assert again["changed"] is False
    assert again["removed"] == []
    assert "diff" not in again


def test_lease_removes_by_subnet(etcd_endpoint, run_module):
    seed(etcd_endpoint)
    result = run_module("lease", dict(endpoints=[etcd_endpoint], subnet=["10.13.48.5/20"]))
    assert [lease["public_ip"] for lease in result["removed"]] == ["192.168.205.11"]
    assert PREFIX + "/subnets/10.13.48.0-20" not in keys(etcd_endpoint)


def test_lease_rejects_bad_addresses(etcd_endpoint, run_module):
    result = run_module("lease", dict(endpoints=[etcd_endpoint], public_ip=["not-an-ip"]))
    assert result["failed"] is True and result["msg"].startswith("public_ip: ")
    result = run_module("lease", dict(endpoints=[etcd_endpoint], subnet=["10.0.0.0/40"]))
    assert result["failed"] is True and result["msg"].startswith("subnet: ")
