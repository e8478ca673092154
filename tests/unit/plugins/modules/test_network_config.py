"""netlab.flannel.network_config (the module) against a real etcd."""

from __future__ import annotations

import json
import sys
import urllib.request

from support.labtools import ansible_playbook

TUTORIAL = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0",
            "SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472}}


def stored(endpoint, key="/coreos.com/network/config"):
    try:
        with urllib.request.urlopen(endpoint + "/v2/keys" + key, timeout=5) as response:
            return json.loads(response.read())["node"]["value"]
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return None


def put(endpoint, value, key="/coreos.com/network/config"):
    request = urllib.request.Request(endpoint + "/v2/keys" + key, method="PUT",
                                     data=("value=" + urllib.parse.quote(value)).encode())
    urllib.request.urlopen(request, timeout=5).read()


# A wireguard pre-shared key (base64 of 32 bytes), a secret the output must never show.
PSK = "q8ZLY0mF3sGz9eJv2ZCwT7kR1nXo4pHd6aUiMbEcV5w="


def test_a_wireguard_psk_is_stored_but_never_shown(etcd_endpoint, tmp_path):
    """Through ansible-playbook at -v with --diff (Ansible's own masking of what the module
    marks secret), network_config writing the config and lease_info reading it back."""
    config = dict(TUTORIAL, Backend={"Type": "wireguard", "PSK": PSK})
    playbook = tmp_path / "psk.yml"
    playbook.write_text(json.dumps([{
        "name": "Store a wireguard config with a PSK and read it back", "hosts": "localhost",
        "connection": "local", "gather_facts": False, "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "Store it", "netlab.flannel.network_config": {"endpoints": [etcd_endpoint], "config": config}},
                  {"name": "Read it", "netlab.flannel.lease_info": {"endpoints": [etcd_endpoint]}}]}]))
    rc, output = ansible_playbook(["-v", "--diff", str(playbook)], inventories=["localhost,"])
    assert rc == 0, output[-3000:]
    assert json.loads(stored(etcd_endpoint))["Backend"]["PSK"] == PSK
    assert PSK not in output, output[-3000:]
    assert output.count('"PSK": "(set, not shown)"') == 2  # network_config's config and lease_info's


def test_writes_missing_config_then_is_idempotent(etcd_endpoint, run_module):
    first = run_module("network_config", dict(endpoints=[etcd_endpoint], config=TUTORIAL), diff=True)
    assert first["changed"] is True
    assert first["previous"] is None
    assert first["diff"]["before"] == ""
    assert json.loads(first["diff"]["after"]) == TUTORIAL
    assert json.loads(stored(etcd_endpoint)) == TUTORIAL
    assert first["config"]["SubnetMin"] == "10.10.0.0"
    assert first["config"]["Backend"] == {"Type": "vxlan", "VNI": 100, "Port": 8472, "GBP": False,
                                          "DirectRouting": False}

    second = run_module("network_config", dict(endpoints=[etcd_endpoint], config=TUTORIAL), diff=True)
    assert second["changed"] is False
    assert "diff" not in second


def test_semantically_equal_config_is_not_rewritten(etcd_endpoint, run_module):
    # Other key case and order, defaults spelled out: flanneld reads the same network.
    put(etcd_endpoint, '{"backend": {"port": 8472, "vni": 100, "type": "VXLAN"}, "subnetlen": 20,'
                       ' "network": "10.0.0.0/8", "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",'
                       ' "unknown": 1}')
    before = stored(etcd_endpoint)
    result = run_module("network_config", dict(endpoints=etcd_endpoint, config=json.dumps(TUTORIAL)))
    assert result["changed"] is False
    assert stored(etcd_endpoint) == before


def test_different_config_is_replaced_with_diff(etcd_endpoint, run_module):
    put(etcd_endpoint, json.dumps(dict(TUTORIAL, SubnetLen=24, SubnetMin="10.10.0.0", SubnetMax="10.99.0.0")))
    result = run_module("network_config", dict(endpoints=[etcd_endpoint], config=TUTORIAL), diff=True)
    assert result["changed"] is True
    assert '"SubnetLen": 24' in result["diff"]["before"]
    assert '"SubnetLen": 20' in result["diff"]["after"]
    assert json.loads(stored(etcd_endpoint))["SubnetLen"] == 20


def test_check_mode_reports_but_does_not_write(etcd_endpoint, run_module):
    result = run_module("network_config", dict(endpoints=[etcd_endpoint], config=TUTORIAL),
                        check_mode=True, diff=True)
    assert result["changed"] is True
    assert json.loads(result["diff"]["after"]) == TUTORIAL
    assert stored(etcd_endpoint) is None


def test_invalid_stored_config_is_replaced(etcd_endpoint, run_module):
    put(etcd_endpoint, "not json at all")
    result = run_module("network_config", dict(endpoints=[etcd_endpoint], config=TUTORIAL), diff=True)
    assert result["changed"] is True
    assert result["previous_error"] == ('config: must be a JSON object (a dictionary) or JSON text of one, '
                                        'got the text "not json at all"')
    assert result["diff"]["before"] == "not json at all\n"
    assert json.loads(stored(etcd_endpoint)) == TUTORIAL


def test_custom_prefix(etcd_endpoint, run_module):
    result = run_module("network_config", dict(endpoints=[etcd_endpoint], prefix="/coreos.com/lab/",
                                               config=TUTORIAL))
    assert result["key"] == "/coreos.com/lab/config"
    assert json.loads(stored(etcd_endpoint, "/coreos.com/lab/config")) == TUTORIAL
    assert stored(etcd_endpoint) is None


def test_invalid_config_fails_before_contacting_etcd(etcd_endpoint, run_module):
    bad = dict(TUTORIAL, SubnetMin="11.0.0.0")
    result = run_module("network_config", dict(endpoints=[etcd_endpoint], config=bad, config_name="my_var"))
    assert result["failed"] is True
    assert result["msg"] == "my_var.SubnetMin: SubnetMin is not in the range of the Network"
    assert (result["key"], result["rule"]) == ("SubnetMin", "SubnetMin is not in the range of the Network")
    assert stored(etcd_endpoint) is None


def test_unreachable_endpoint_names_the_endpoint(run_module):
    # A loopback port nothing listens on: refused at once.
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = "http://127.0.0.1:%d" % port
    result = run_module("network_config", dict(endpoints=[endpoint], config=TUTORIAL, timeout=2))
    assert result["failed"] is True
    assert result["msg"].startswith("etcd at %s: no etcd endpoint answered" % endpoint)


def test_malformed_endpoint_is_rejected(run_module):
    result = run_module("network_config", dict(endpoints=["127.0.0.1:2379"], config=TUTORIAL))
    assert result["failed"] is True
    assert result["msg"].startswith("endpoints: etcd endpoint '127.0.0.1:2379' must look like")


def test_fails_over_to_the_second_endpoint(etcd_endpoint, run_module):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % sock.getsockname()[1]
    result = run_module("network_config", dict(endpoints="%s,%s" % (dead, etcd_endpoint), config=TUTORIAL))
    assert result["changed"] is True
    assert json.loads(stored(etcd_endpoint)) == TUTORIAL
