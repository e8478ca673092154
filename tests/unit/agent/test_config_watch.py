"""ConfigWatch and config_changes: which stored configs the agent moves to, which it refuses and
why (pure logic; the moves themselves are tested on namespace hosts in tests/agent)."""

import logging

from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config_watch import (
    ConfigWatch, config_changes, moves_lease)

KEY = "/coreos.com/network/config"
VXLAN = '{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "vxlan", "VNI": 100}}'
IN_FORCE = parse_network_config(VXLAN)


def _watch():
    watch = ConfigWatch(KEY, logging.getLogger("test"))
    watch.started_with(VXLAN)
    return watch


def test_same_text_or_same_effective_config_moves_nothing(caplog):
    watch = _watch()
    assert watch.examine(VXLAN, IN_FORCE) is None
    with caplog.at_level(logging.INFO):
        assert watch.examine(VXLAN.replace(" ", ""), IN_FORCE) is None
    assert "rewritten with the same effective config %s" % IN_FORCE.digest() in caplog.text
    assert watch.refusal is None


def test_valid_change_is_returned_with_what_changed(caplog):
    watch = _watch()
    with caplog.at_level(logging.INFO):
        new = watch.examine(VXLAN.replace('"VNI": 100', '"VNI": 200, "Extra": 1'), IN_FORCE)
    assert new.backend.vni == 200 and new.digest() != IN_FORCE.digest()
    assert "changed (Backend.VNI)" in caplog.text
    assert "Backend.Extra: unknown key" in caplog.text  # the agent's lenient mode


def test_invalid_or_deleted_config_is_refused_naming_key_and_rule_until_fixed():
    watch = _watch()
    assert watch.examine('{"Network": "10.0.0.0/8", "SubnetLen": 31}', IN_FORCE) is None
    assert watch.refusal == ("network config at %s refused: SubnetLen: SubnetLen must be less than /31; "
                             "running on the last good config %s" % (KEY, IN_FORCE.digest()))
    assert watch.examine(None, IN_FORCE) is None
    assert watch.refusal.startswith("%s was deleted; running on the last good config" % KEY)
    assert watch.examine(VXLAN, IN_FORCE) is None and watch.refusal is None


def test_config_changes_names_the_keys():
    host_gw = parse_network_config('{"Network": "10.0.0.0/16", "Backend": {"Type": "host-gw"}}')
    assert config_changes(IN_FORCE, host_gw) == ["Backend.Type", "Network", "SubnetLen", "SubnetMin", "SubnetMax"]
    mtu = parse_network_config(VXLAN.replace('"VNI": 100', '"VNI": 100, "MTU": 1400'))
    assert config_changes(IN_FORCE, mtu) == ["Backend.MTU"]


def test_lease_moves_only_when_it_no_longer_fits():
    narrowed = parse_network_config('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMax": "10.50.0.0"}')
    assert not moves_lease(narrowed, IPNetwork("10.20.0.0/20"))
    assert moves_lease(narrowed, IPNetwork("10.60.0.0/20"))
    assert moves_lease(parse_network_config('{"Network": "10.0.0.0/8"}'), IPNetwork("10.20.0.0/20"))


def test_forget_examines_the_same_text_again(caplog):
    watch = _watch()
    bad = '{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": 0}}'
    with caplog.at_level(logging.ERROR):
        watch.examine(bad, IN_FORCE)
        watch.examine(bad, IN_FORCE)
        assert caplog.text.count("Backend.VNI: must be between") == 1
        watch.forget()
        watch.examine(bad, IN_FORCE)
    assert caplog.text.count("Backend.VNI: must be between") == 2


def test_config_covering_the_underlay_is_refused_and_the_good_one_back_moves_nothing():
    watch = _watch()
    asked = []

    def underlay():
        asked.append(True)
        return [("172.31.250.11", "this host (its public IP)"), ("172.31.250.12", "the host holding lease X")]

    assert watch.examine(VXLAN, IN_FORCE, underlay) is None and asked == []  # the same text: not looked at
    covering = VXLAN.replace("10.0.0.0/8", "172.31.0.0/16")
    assert watch.examine(covering, IN_FORCE, underlay) is None
    assert watch.refusal == ("network config at %s refused: Network: 172.31.0.0/16 contains the address "
                             "172.31.250.11 of this host (its public IP): the overlay must not cover the hosts' "
                             "own network; running on the last good config %s" % (KEY, IN_FORCE.digest()))
    assert watch.examine('{"Network": "172.31.250.0/28", "Backend": {"Type": "vxlan", "VNI": 100}}', IN_FORCE,
                         underlay) is None
    assert "Network: 172.31.250.0/28 contains the address 172.31.250.11" in watch.refusal
    assert watch.examine(VXLAN.replace(" ", ""), IN_FORCE, underlay) is None and watch.refusal is None
    moved = watch.examine(VXLAN.replace("10.0.0.0/8", "172.30.0.0/16"), IN_FORCE, underlay)
    assert str(moved.network) == "172.30.0.0/16" and watch.refusal is None
