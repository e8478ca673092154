"""The dual-stack keys of the network config (issue 24): upstream's defaults, and a clear error
naming the key for every bad value; an IPv4-only config reads exactly as before."""

import itertools
import json

import pytest
from netaddr import IPAddress, IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import ConfigError, parse_network_config

TUTORIAL = {"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "vxlan", "VNI": 100}}


def _dual(**ipv6):
    return dict(TUTORIAL, EnableIPv6=True, **ipv6)


def test_upstream_documentation_example_gets_upstream_defaults():
    # flannel's Documentation/configuration.md, "Dual-stack": "IPv6Network": "2001:cafe:42:0::/56".
    config = parse_network_config(_dual(IPv6Network="2001:cafe:42:0::/56"))
    ipv6 = config.ipv6
    assert (ipv6.network, ipv6.subnet_len, ipv6.subnet_min, ipv6.subnet_max) == (
        IPNetwork("2001:cafe:42::/56"), 64, IPAddress("2001:cafe:42:1::"), IPAddress("2001:cafe:42:ff::"))
    assert config.as_dict() == dict(parse_network_config(TUTORIAL).as_dict(), EnableIPv6=True,
                                    IPv6Network="2001:cafe:42::/56", IPv6SubnetLen=64,
                                    IPv6SubnetMin="2001:cafe:42:1::", IPv6SubnetMax="2001:cafe:42:ff::")
    assert parse_network_config(json.dumps(config.as_dict())) == config  # what it stores, it reads back


@pytest.mark.parametrize("network, subnet_len", [("fd00::/62", 64), ("fd00::/63", 65), ("fd00::/124", 126)])
def test_default_ipv6_subnet_len_is_64_or_four_subnets(network, subnet_len):
    assert parse_network_config(_dual(IPv6Network=network)).ipv6.subnet_len == subnet_len


def test_ipv4_only_config_is_as_before():
    config = parse_network_config(TUTORIAL)
    assert config.ipv6 is None and "EnableIPv6" not in config.as_dict()
    assert parse_network_config(dict(TUTORIAL, EnableIPv6=False, EnableIPv4=True)) == config
    assert parse_network_config(dict(TUTORIAL, EnableIPv6=False)).digest() == config.digest()


def test_explicit_range_and_case_insensitive_keys():
    config = parse_network_config(dict(TUTORIAL, enableipv6=True, IPV6NETWORK="fd00:10::/48", ipv6subnetlen=80,
                                       IPv6SubnetMin="fd00:10:0:5::", IPv6SubnetMax="fd00:10:0:6::"))
    assert (config.ipv6.subnet_len, str(config.ipv6.subnet_min), str(config.ipv6.subnet_max)) == (
        80, "fd00:10:0:5::", "fd00:10:0:6::")
    first = itertools.islice(config.ipv6.candidate_subnets(), 2)
    assert [str(subnet) for subnet in first] == ["fd00:10:0:5::/80", "fd00:10:0:5:1::/80"]


@pytest.mark.parametrize("ipv6, key, rule", [
    ({}, "IPv6Network", "is required with EnableIPv6"),
    ({"IPv6Network": ""}, "IPv6Network", "is required with EnableIPv6"),
    ({"IPv6Network": "fd00::"}, "IPv6Network", 'must be an IPv6 CIDR such as fd00:10::/48, got "fd00::"'),
    ({"IPv6Network": "10.0.0.0/8"}, "IPv6Network", 'must be an IPv6 CIDR such as fd00:10::/48, got "10.0.0.0/8"'),
    ({"IPv6Network": "fe80::1%eth0/64"}, "IPv6Network", "must be an IPv6 CIDR"),
    ({"IPv6Network": 6}, "IPv6Network", "must be an IPv6 CIDR such as fd00:10::/48, got 6"),
    ({"IPv6Network": " fd00::/48"}, "IPv6Network", "must not have surrounding whitespace"),
    ({"IPv6Network": "fd00::1/48"}, "IPv6Network", "fd00::1/48 has host bits set: must be a network address, "
                                                   "such as fd00::/48"),
    ({"IPv6Network": "::/0"}, "IPv6Network", "::/0 is the whole address space"),
    ({"IPv6Network": "fe80::/64"}, "IPv6Network", "overlaps the link-local range fe80::/10"),
    ({"IPv6Network": "ff00::/16"}, "IPv6Network", "overlaps the multicast range ff00::/8"),
    ({"IPv6Network": "::ffff:0:0/104"}, "IPv6Network", "overlaps the IPv4-mapped range"),
    ({"IPv6Network": "::/120"}, "IPv6Network", "overlaps the unspecified, loopback and IPv4-compatible range"),
    ({"IPv6Network": "fd00::/125"}, "IPv6Network", "IPv6Network is too small. Minimum useful network prefix is /124"),
    ({"IPv6Network": "fd00::/48", "IPv6SubnetLen": 127}, "IPv6SubnetLen", "IPv6SubnetLen must be less than /127"),
    ({"IPv6Network": "fd00::/48", "IPv6SubnetLen": 49}, "IPv6SubnetLen",
     "IPv6Network must be able to accommodate at least four subnets"),
    ({"IPv6Network": "fd00::/48", "IPv6SubnetLen": "64"}, "IPv6SubnetLen", 'must be an integer, got "64"'),
    ({"IPv6Network": "fd00::/48", "IPv6SubnetMin": "fd01::"}, "IPv6SubnetMin",
     "IPv6SubnetMin is not in the range of the IPv6Network"),
    ({"IPv6Network": "fd00::/48", "IPv6SubnetMax": "fd00:0:0:1::1"}, "IPv6SubnetMax",
     "IPv6SubnetMax is not on an IPv6SubnetLen boundary: fd00:0:0:1::1"),
    ({"IPv6Network": "fd00::/48", "IPv6SubnetMin": "fd00::/64"}, "IPv6SubnetMin", "must be an IPv6 address"),
    ({"IPv6Network": "fd00::/48", "IPv6SubnetMin": "fd00:0:0:9::", "IPv6SubnetMax": "fd00:0:0:8::"},
     "IPv6SubnetMin", "IPv6SubnetMin fd00:0:0:9:: is above IPv6SubnetMax fd00:0:0:8::"),
])
def test_bad_ipv6_values_name_the_key_and_rule(ipv6, key, rule):
    with pytest.raises(ConfigError) as caught:
        parse_network_config(_dual(**ipv6))
    assert caught.value.key == key
    assert rule in caught.value.rule


@pytest.mark.parametrize("document, key, rule", [
    (dict(TUTORIAL, EnableIPv6="true"), "EnableIPv6", 'must be true or false, got "true"'),
    (dict(TUTORIAL, EnableIPv4=False, EnableIPv6=True, IPv6Network="fd00::/48"), "EnableIPv4",
     "must be true: an IPv6-only network is not supported"),
    (dict(TUTORIAL, EnableIPv6=True, IPv6Network="fd00::/48", Backend={"Type": "udp"}), "EnableIPv6",
     "backend udp does not carry IPv6: use one of vxlan, host-gw, alloc, or turn EnableIPv6 off"),
    (dict(TUTORIAL, IPv6Network="fd00::/48"), "IPv6Network", 'only used with "EnableIPv6": true'),
])
def test_other_dual_stack_mistakes_are_refused(document, key, rule):
    with pytest.raises(ConfigError) as caught:
        parse_network_config(document)
    assert (caught.value.key, caught.value.rule.startswith(rule)) == (key, True), caught.value.rule


def test_agent_mode_ignores_ipv6_keys_without_enable_ipv6_with_a_warning():
    config = parse_network_config(dict(TUTORIAL, IPv6Network="fd00::/48", IPv6SubnetLen=64), strict=False)
    assert config == parse_network_config(TUTORIAL)
    assert config.warnings == ['IPv6Network: only used with "EnableIPv6": true, ignored',
                               'IPv6SubnetLen: only used with "EnableIPv6": true, ignored']


def test_host_gw_runs_dual_stack():
    config = parse_network_config({"Network": "10.0.0.0/8", "EnableIPv6": True, "IPv6Network": "fd00::/48",
                                   "Backend": {"Type": "host-gw"}})
    assert config.backend.type == "host-gw" and config.ipv6.network == IPNetwork("fd00::/48")
