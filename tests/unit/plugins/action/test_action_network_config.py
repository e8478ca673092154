"""The netlab.flannel.network_config action plugin, with its modules run in-process on a real etcd."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
from hypothesis import given, settings, strategies as st

TUTORIAL = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0",
            "SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472}}


def stored(endpoint):
    try:
        with urllib.request.urlopen(endpoint + "/v2/keys/coreos.com/network/config", timeout=5) as response:
            return json.loads(response.read())["node"]["value"]
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return None


def test_writes_then_reports_unchanged_with_leases(etcd_endpoint, make_action):
    action = make_action("network_config", dict(config=TUTORIAL, endpoints=etcd_endpoint, report_leases=True),
                         diff=True)
    result = action.run(task_vars={})
    assert result["changed"] is True, result
    assert result["leases"] == []
    assert json.loads(stored(etcd_endpoint)) == TUTORIAL
    assert [name for name, dummy in action.executed] == ["netlab.flannel.network_config",
                                                         "netlab.flannel.lease_info"]
    # Only the etcd options the task set are passed on; the module's defaults fill in the rest.
    assert action.executed[1][1] == {"endpoints": [etcd_endpoint]}

    again = make_action("network_config", dict(config=TUTORIAL, endpoints=etcd_endpoint)).run(task_vars={})
    assert again["changed"] is False
    assert "leases" not in again


def test_check_mode_predicts_without_writing(etcd_endpoint, make_action):
    result = make_action("network_config", dict(config=TUTORIAL, endpoints=[etcd_endpoint]),
                         check_mode=True, diff=True).run(task_vars={})
    assert result["changed"] is True
    assert json.loads(result["diff"]["after"]) == TUTORIAL
    assert stored(etcd_endpoint) is None


def etcd_dump(endpoint):
    """Every key and value in the tests' etcd (v2 API, recursive)."""
    keys = {}

    def walk(node):
        for child in node.get("nodes", []):
            walk(child)
        if not node.get("dir"):
            keys[node["key"]] = node.get("value")
    with urllib.request.urlopen(endpoint + "/v2/keys/?recursive=true&sorted=true", timeout=5) as response:
        walk(json.load(response)["node"])
    return keys


def seed(endpoint):
    """A stored config and a lease, so that a write would show in the snapshot."""
    for key, value in (("config", json.dumps(dict(TUTORIAL, SubnetLen=24))),
                       ("subnets/10.10.0.0-24", '{"PublicIP": "192.168.205.10", "BackendType": "host-gw"}')):
        request = urllib.request.Request(endpoint + "/v2/keys/coreos.com/network/" + key, method="PUT",
                                         data=urllib.parse.urlencode({"value": value}).encode())
        urllib.request.urlopen(request, timeout=5).read()


def nested(depth):
    inner = {}
    for dummy in range(depth - 1):
        inner = {"x": inner}
    return inner


LAB_HOSTS = {"docker-node1": "192.168.205.10", "docker-node2": "192.168.205.11"}
BIG_MESSAGE = "is %d bytes of JSON, above the limit of 65536 bytes (a network config is a few hundred)"


@pytest.mark.parametrize("config, key, rule", [
    (dict(TUTORIAL, Backend={"Type": "geneve"}), "Backend.Type",
     'unknown backend type: "geneve"; use one of: vxlan, host-gw, udp, wireguard, extension, alloc'),
    (dict(TUTORIAL, Backend={"Type": ""}), "Backend.Type", 'unknown backend type: ""; use one of: vxlan, host-gw, udp, wireguard, extension, alloc'),
    (dict(TUTORIAL, SubnetLen="20"), "SubnetLen", 'must be an integer, got "20"'),
    (dict(TUTORIAL, SubnetMax="10.99.0.1"), "SubnetMax", "SubnetMax is not on a SubnetLen boundary: 10.99.0.1"),
    (dict(TUTORIAL, SubnetLen=31), "SubnetLen", "SubnetLen must be less than /31"),
    (dict(TUTORIAL, Backend={"Type": "vxlan", "VNI": 0}), "Backend.VNI", "must be between 1 and 16777215, got 0"),
    ('{"Network": ', "config", None),
    (["10.0.0.0/8"], "config", "must be a JSON object (a dictionary) or JSON text of one, got a list"),
    (dict(TUTORIAL, Netwrok="10.0.0.0/8"), "Netwrok",
     'unknown key (did you mean "Network"? known keys: Network, SubnetLen, SubnetMin, SubnetMax, Backend, '
     'EnableIPv4, EnableIPv6, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax)'),
    (dict(TUTORIAL, Backend={"Type": "vxlan", "VNl": 100}), "Backend.VNl",
     'unknown key (did you mean "VNI"? known keys: Type, VNI, Port, GBP, DirectRouting, MTU)'),
    (dict(TUTORIAL, Network="10.1.2.3/8"), "Network",
     "10.1.2.3/8 has host bits set: must be a network address, such as 10.0.0.0/8"),
    (dict(TUTORIAL, Network="10.0.0.0/8 "), "Network", 'must not have surrounding whitespace, got "10.0.0.0/8 "'),
    ({"Network": "0.0.0.0/0", "Backend": {"Type": "vxlan"}}, "Network",
     "0.0.0.0/0 is the whole address space, the hosts' own addresses included: give the overlay a range of "
     "its own, such as 10.0.0.0/8"),
    ({"Network": "127.0.0.0/8", "Backend": {"Type": "vxlan"}}, "Network",
     "127.0.0.0/8 overlaps the loopback range 127.0.0.0/8: must be IPv4 unicast space (not loopback, "
     "link-local, multicast or reserved)"),
    ({"Network": "224.0.0.0/4", "Backend": {"Type": "vxlan"}}, "Network",
     "224.0.0.0/4 overlaps the multicast range 224.0.0.0/4: must be IPv4 unicast space (not loopback, "
     "link-local, multicast or reserved)"),
    ({"Network": "169.254.0.0/16", "Backend": {"Type": "vxlan"}}, "Network",
     "169.254.0.0/16 overlaps the link-local range 169.254.0.0/16: must be IPv4 unicast space (not loopback, "
     "link-local, multicast or reserved)"),
    ({"Network": "192.168.0.0/16", "Backend": {"Type": "vxlan"}}, "Network",
     "192.168.0.0/16 contains the address 192.168.205.10 of host docker-node1: the overlay must not cover "
     "the hosts' own network"),
    (nested(10000), "config",
     "nests objects and lists more than 8 levels deep (a network config needs 2: the config and its Backend)"),
    ("[" * 10000 + "]" * 10000, "config",
     "nests objects and lists more than 8 levels deep (a network config needs 2: the config and its Backend)"),
    (dict(TUTORIAL, Backend={"Type": "vxlan", "Pad": "x" * (4 << 20)}), "config",
     BIG_MESSAGE % (len(json.dumps(dict(TUTORIAL, Backend={"Type": "vxlan", "Pad": "x" * (4 << 20)}),
                                   separators=(",", ":"))))),
])
def test_invalid_config_fails_on_the_controller_and_etcd_is_unchanged(etcd_endpoint, make_action, config, key,
                                                                      rule):
    seed(etcd_endpoint)
    before = etcd_dump(etcd_endpoint)
    action = make_action("network_config", dict(config=config, endpoints=[etcd_endpoint],
                                                config_name="network_config_flannel", host_addresses=LAB_HOSTS))
    result = action.run(task_vars={})
    assert result["failed"] is True
    assert result["key"] == key
    if rule is not None:
        assert result["rule"] == rule
        where = "network_config_flannel" if key == "config" else "network_config_flannel." + key
        assert result["msg"] == "%s: %s" % (where, rule)
    else:
        assert result["msg"].startswith("network_config_flannel: is not valid JSON")
    assert action.executed == []  # no host was contacted
    assert etcd_dump(etcd_endpoint) == before


def test_host_addresses_reach_the_module_which_checks_them_too(etcd_endpoint, make_action, run_module):
    action = make_action("network_config", dict(config=TUTORIAL, endpoints=[etcd_endpoint], host_addresses=LAB_HOSTS))
    assert action.run(task_vars={})["changed"] is True
    assert action.executed[0][1]["host_addresses"] == LAB_HOSTS
    before = etcd_dump(etcd_endpoint)
    # The module alone (no action plugin in front) refuses the same Network.
    result = run_module("network_config", dict(config=dict(TUTORIAL, Network="192.168.0.0/16", SubnetMin="192.168.16.0",
                                                           SubnetMax="192.168.240.0"),
                                               endpoints=[etcd_endpoint], host_addresses={"n1": "192.168.205.10"}))
    assert result["failed"] is True and result["key"] == "Network"
    assert "contains the address 192.168.205.10 of host n1" in result["msg"]
    assert etcd_dump(etcd_endpoint) == before


def test_stored_config_with_keys_of_other_tools_counts_as_the_same(etcd_endpoint, make_action):
    request = urllib.request.Request(etcd_endpoint + "/v2/keys/coreos.com/network/config", method="PUT",
                                     data=urllib.parse.urlencode({"value": json.dumps(dict(
                                         TUTORIAL, EnableIPv6=False))}).encode())
    urllib.request.urlopen(request, timeout=5).read()
    before = etcd_dump(etcd_endpoint)
    result = make_action("network_config", dict(config=TUTORIAL, endpoints=[etcd_endpoint])).run(task_vars={})
    assert result["changed"] is False
    assert etcd_dump(etcd_endpoint) == before


def test_validate_only_contacts_nothing(make_action):
    action = make_action("network_config", dict(config=json.dumps(TUTORIAL), validate_only=True))
    result = action.run(task_vars={})
    assert result == {"changed": False, "config": {
        "Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
        "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472, "GBP": False, "DirectRouting": False}}}
    assert action.executed == []


def test_bad_option_types_are_rejected(make_action):
    action = make_action("network_config", dict(config=TUTORIAL, report_leases="maybe"))
    result = action.run(task_vars={})
    assert result["failed"] is True
    assert "report_leases" in result["msg"]
    assert action.executed == []


def test_unknown_option_is_rejected(make_action):
    from ansible.errors import AnsibleActionFail
    action = make_action("network_config", dict(config=TUTORIAL, endpoint="http://127.0.0.1:2379"))
    with pytest.raises(AnsibleActionFail, match="Invalid options.*endpoint"):
        action.run(task_vars={})


def test_unreachable_etcd_is_reported(make_action):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = "http://127.0.0.1:%d" % sock.getsockname()[1]
    result = make_action("network_config", dict(config=TUTORIAL, endpoints=[endpoint], timeout=2)).run(task_vars={})
    assert result["failed"] is True
    assert result["msg"].startswith("etcd at %s: no etcd endpoint answered" % endpoint)


JSON_DATA = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                         lambda children: st.lists(children, max_size=4)
                         | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(JSON_DATA | st.text(max_size=100), st.dictionaries(st.text(max_size=5), st.text(max_size=16), max_size=3))
def test_any_config_gives_an_effective_config_or_a_named_failure(config, host_addresses):
    from ansible_collections.netlab.flannel.plugins.action.network_config import check_config_bounds, validate_config
    failure = check_config_bounds(config, "cfg")
    if failure is None:
        effective, failure = validate_config(config, "cfg", host_addresses)
    if failure is None:
        assert set(effective) == {"Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend"}
    else:
        assert failure["failed"] is True and failure["key"] and failure["rule"]
        assert failure["msg"].startswith("cfg")
