"""Network config rules: flanneld v0.10's defaults and messages, plus the stricter checks."""

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import (
    ConfigError, parse_network_config)

TUTORIAL = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", '
            '"SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472}}')


def test_tutorial_config_is_taken_as_written():
    config = parse_network_config(TUTORIAL)
    assert config.as_dict() == {
        "Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
        "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472, "GBP": False, "DirectRouting": False}}
    assert config.backend.dst_port == 8472


def test_upstream_example_defaults_lower_case_keys():
    config = parse_network_config({"network": "10.3.0.0/16", "backend": {"type": "VXLAN"}})
    assert (config.subnet_len, str(config.subnet_min), str(config.subnet_max)) == (24, "10.3.1.0", "10.3.255.0")
    assert config.backend.type == "vxlan" and config.backend.vni == 1 and config.backend.dst_port == 8472


@pytest.mark.parametrize("network, subnet_len", [("10.0.0.0/22", 24), ("10.0.0.0/23", 25), ("10.0.0.0/28", 30)])
def test_default_subnet_len(network, subnet_len):
    assert parse_network_config({"Network": network, "Backend": {"Type": "host-gw"}}).subnet_len == subnet_len


def test_host_bits_of_network_are_masked():
    assert str(parse_network_config({"Network": "10.1.2.3/16", "Backend": {"Type": "vxlan"}}).network) == "10.1.0.0/16"


def test_semantically_equal_configs_compare_equal():
    spelled_out = parse_network_config(TUTORIAL)
    lower = parse_network_config({"network": "10.0.0.0/8", "subnetlen": 20, "subnetmin": "10.10.0.0",
                                  "subnetmax": "10.99.0.0", "backend": {"type": "vxlan", "vni": 100,
                                                                        "port": 8472}})
    assert spelled_out == lower


@pytest.mark.parametrize("document, key, rule", [
    ("not json", "config", "is not valid JSON"),
    ("[1, 2]", "config", "must be a JSON object"),
    ({}, "Network", "is required"),
    ({"Network": ""}, "Network", "is required"),
    ({"Network": "10.0.0.0"}, "Network", "must be an IPv4 CIDR"),
    ({"Network": "fd00::/64"}, "Network", "must be an IPv4 CIDR"),
    ({"Network": 10}, "Network", "must be an IPv4 CIDR"),
    ({"Network": "10.0.0.0/29"}, "Network", "Network is too small. Minimum useful network prefix is /28"),
    ({"Network": "10.0.0.0/8", "SubnetLen": 31}, "SubnetLen", "SubnetLen must be less than /31"),
    ({"Network": "10.0.0.0/24", "SubnetLen": 25}, "SubnetLen",
     "Network must be able to accommodate at least four subnets"),
    ({"Network": "10.0.0.0/8", "SubnetLen": "20"}, "SubnetLen", "must be an integer"),
    ({"Network": "10.0.0.0/8", "SubnetLen": True}, "SubnetLen", "must be an integer"),
    ({"Network": "10.0.0.0/8", "SubnetMin": "11.0.0.0"}, "SubnetMin", "SubnetMin is not in the range of the Network"),
    ({"Network": "10.0.0.0/8", "SubnetMax": "9.0.0.0"}, "SubnetMax", "SubnetMax is not in the range of the Network"),
    ({"Network": "10.0.0.0/8", "SubnetMin": "10.0.1.1"}, "SubnetMin",
     "SubnetMin is not on a SubnetLen boundary: 10.0.1.1"),
    ({"Network": "10.0.0.0/8", "SubnetMax": "10.0.1.128"}, "SubnetMax",
     "SubnetMax is not on a SubnetLen boundary: 10.0.1.128"),
    ({"Network": "10.0.0.0/8", "SubnetMin": "10.0.0.x"}, "SubnetMin", "must be an IPv4 address"),
    ({"Network": "10.0.0.0/8", "SubnetMin": "10.9.0.0", "SubnetMax": "10.8.0.0"}, "SubnetMin",
     "is above SubnetMax"),
    ({"Network": "10.0.0.0/8"}, "Backend.Type", "backend type udp is not supported"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "udp"}}, "Backend.Type", "backend type udp is not supported"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan2"}}, "Backend.Type", "unknown backend type: vxlan2"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": 3}}, "Backend.Type", "must be a string"),
    ({"Network": "10.0.0.0/8", "Backend": "vxlan"}, "Backend", "must be a JSON object"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": 0}}, "Backend.VNI", "must be between 1 and 16777215"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": 16777216}}, "Backend.VNI",
     "must be between 1 and 16777215"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": "100"}}, "Backend.VNI", "must be an integer"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "Port": 65536}}, "Backend.Port",
     "must be between 1 and 65535"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "Port": -1}}, "Backend.Port", "must be between 1 and 65535"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "GBP": "yes"}}, "Backend.GBP", "must be true or false"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "DirectRouting": 1}}, "Backend.DirectRouting",
     "must be true or false"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "MTU": 100}}, "Backend.MTU", "must be between 576"),
])
def test_each_rule_names_its_key(document, key, rule):
    with pytest.raises(ConfigError) as caught:
        parse_network_config(document)
    assert caught.value.key == key
    assert rule in caught.value.rule
    assert str(caught.value).startswith(key + ": ")


def test_compatibility_rule():
    config = parse_network_config(TUTORIAL)
    from netaddr import IPNetwork
    assert config.is_compatible(IPNetwork("10.10.0.0/20"))
    assert config.is_compatible(IPNetwork("10.99.0.0/20"))
    assert not config.is_compatible(IPNetwork("10.99.16.0/20"))
    assert not config.is_compatible(IPNetwork("10.10.0.0/24"))
    assert len(list(config.candidate_subnets())) == (99 - 10) * 16 + 1
