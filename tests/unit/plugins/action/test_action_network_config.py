"""The netlab.flannel.network_config action plugin, with its modules run in-process on a real etcd."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

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


@pytest.mark.parametrize("config, key, rule", [
    (dict(TUTORIAL, Backend={"Type": "geneve"}), "Backend.Type", "unknown backend type: geneve"),
    (dict(TUTORIAL, SubnetLen="20"), "SubnetLen", 'must be an integer, got "20"'),
    (dict(TUTORIAL, SubnetMax="10.99.0.1"), "SubnetMax", "SubnetMax is not on a SubnetLen boundary: 10.99.0.1"),
    (dict(TUTORIAL, SubnetLen=31), "SubnetLen", "SubnetLen must be less than /31"),
    (dict(TUTORIAL, Backend={"Type": "vxlan", "VNI": 0}), "Backend.VNI", "must be between 1 and 16777215, got 0"),
    ('{"Network": ', "config", None),
    (["10.0.0.0/8"], "config", "must be a dictionary or JSON text, got list"),
])
def test_invalid_config_fails_on_the_controller(etcd_endpoint, make_action, config, key, rule):
    action = make_action("network_config", dict(config=config, endpoints=[etcd_endpoint],
                                                config_name="network_config_flannel"))
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
    assert stored(etcd_endpoint) is None


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
