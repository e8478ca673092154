"""Network config rules: flanneld v0.10's defaults and messages, plus the stricter checks."""

import json

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import (
    ConfigError, check_host_addresses, check_underlay_addresses, parse_network_config)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config_json import MAX_CONFIG_BYTES, MAX_DEPTH

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


def test_no_backend_means_udp_on_port_8285_as_upstream():
    assert parse_network_config({"Network": "10.0.0.0/8"}).as_dict()["Backend"] == {"Type": "udp", "Port": 8285}
    assert parse_network_config({"Network": "10.0.0.0/8", "Backend": {}}).backend.port == 8285
    config = parse_network_config({"Network": "10.0.0.0/8", "Backend": {"type": "UDP", "port": 7890}})
    assert (config.backend.type, config.backend.port) == ("udp", 7890)


@pytest.mark.parametrize("network, subnet_len", [("10.0.0.0/22", 24), ("10.0.0.0/23", 25), ("10.0.0.0/28", 30)])
def test_default_subnet_len(network, subnet_len):
    assert parse_network_config({"Network": network, "Backend": {"Type": "host-gw"}}).subnet_len == subnet_len


def test_public_unicast_space_is_a_valid_network():
    # flannel users do run overlays in public space they own; only non-unicast space is refused.
    assert str(parse_network_config({"Network": "100.64.0.0/10", "Backend": {"Type": "host-gw"}}).network) \
        == "100.64.0.0/10"


def test_semantically_equal_configs_compare_equal():
    spelled_out = parse_network_config(TUTORIAL)
    lower = parse_network_config({"network": "10.0.0.0/8", "subnetlen": 20, "subnetmin": "10.10.0.0",
                                  "subnetmax": "10.99.0.0", "backend": {"type": "vxlan", "vni": 100,
                                                                        "port": 8472}})
    assert spelled_out == lower


@pytest.mark.parametrize("document, key, rule", [
    ("not json", "config", 'must be a JSON object (a dictionary) or JSON text of one, got the text "not json"'),
    ("10.0.0.0/8", "config", 'got the text "10.0.0.0/8"'),
    ('{"Network": "10.0.0.0/8",', "config", "is not valid JSON: "),
    ("[1, 2]", "config", "must be a JSON object (a dictionary) or JSON text of one, got a list"),
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
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "udp", "Port": 0}}, "Backend.Port",
     "must be between 1 and 65535, got 0"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "udp", "Port": "8285"}}, "Backend.Port", "must be an integer"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan2"}}, "Backend.Type",
     'unknown backend type: "vxlan2"; use one of: vxlan, host-gw, udp, wireguard'),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": ""}}, "Backend.Type", 'unknown backend type: ""'),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": " vxlan"}}, "Backend.Type", 'unknown backend type: " vxlan"'),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": 3}}, "Backend.Type", "must be a string"),
    ({"Network": "10.0.0.0/8", "Backend": "vxlan"}, "Backend", "must be a JSON object, got a string"),
    (["10.0.0.0/8"], "config", "must be a JSON object (a dictionary) or JSON text of one, got a list"),
    ('"10.0.0.0/8"', "config", "must be a JSON object (a dictionary) or JSON text of one, got a string"),
    (None, "config", "got null"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "Learning": True}}, "Backend.Learning",
     "unknown key (known keys: Type, VNI, Port, GBP, DirectRouting, MTU)"),
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
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "extension", "SubnetAddCommand": "ip route add $SUBNET dev x"}},
     "Backend.SubnetAddCommand", "'$SUBNET' is shell syntax, but the command runs without a shell; to have a shell "
                                 "read it, write: sh -c 'ip route add $SUBNET dev x'"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "extension", "PreStartupCommand": "wg genkey | wg pubkey"}},
     "Backend.PreStartupCommand", "'|' is shell syntax"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "extension", "PostStartupCommand": "sh -c 'x"}},
     "Backend.PostStartupCommand", "cannot be split into words: no closing quotation"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "extension", "SubnetRemoveCommand": ["ip", "route"]}},
     "Backend.SubnetRemoveCommand", 'must be a command line (a string), got ["ip", "route"]'),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "extension", "CommandTimeout": 0}}, "Backend.CommandTimeout",
     "must be between 1 and 3600 seconds, got 0"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "extension", "CommandTimeout": "30s"}}, "Backend.CommandTimeout",
     "must be an integer"),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "extension", "SubnetAddCmd": "true"}}, "Backend.SubnetAddCmd",
     'unknown key (did you mean "SubnetAddCommand"? known keys: Type, PreStartupCommand, PostStartupCommand, '
     'SubnetAddCommand, SubnetRemoveCommand, CommandTimeout)'),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "alloc", "VNI": 1}}, "Backend.VNI",
     "not an option of backend alloc (its keys: Type)"),
])
def test_each_rule_names_its_key(document, key, rule):
    with pytest.raises(ConfigError) as caught:
        parse_network_config(document)
    assert caught.value.key == key
    assert rule in caught.value.rule
    assert str(caught.value).startswith(key + ": ")


def test_extension_takes_v0_10_keys_as_go_reads_them_and_alloc_only_its_type():
    """Keys in any case, an absent or null command is none; the effective config lists every key."""
    config = parse_network_config({"Network": "10.0.0.0/8", "Backend": {
        "type": "Extension", "prestartupcommand": "wg pubkey", "SubnetAddCommand": "sh -c 'ip route add $SUBNET'",
        "SubnetRemoveCommand": None}})
    assert config.backend.as_dict() == {
        "Type": "extension", "PreStartupCommand": "wg pubkey", "PostStartupCommand": "",
        "SubnetAddCommand": "sh -c 'ip route add $SUBNET'", "SubnetRemoveCommand": "", "CommandTimeout": 30}
    assert parse_network_config({"Network": "10.0.0.0/8", "Backend": {"Type": "alloc"}}).backend.as_dict() == {
        "Type": "alloc"}


def test_compatibility_rule():
    config = parse_network_config(TUTORIAL)
    from netaddr import IPNetwork
    assert config.is_compatible(IPNetwork("10.10.0.0/20"))
    assert config.is_compatible(IPNetwork("10.99.0.0/20"))
    assert not config.is_compatible(IPNetwork("10.99.16.0/20"))
    assert not config.is_compatible(IPNetwork("10.10.0.0/24"))
    assert len(list(config.candidate_subnets())) == (99 - 10) * 16 + 1


# ---- bounded size and depth ------------------------------------------------------------------

def nested(depth):
    """depth levels of objects: the config object, then {"x": {...}} inside it."""
    inner = {}
    for dummy in range(depth - 1):
        inner = {"x": inner}
    return inner


@pytest.mark.parametrize("as_text", [True, False])
def test_ten_thousand_levels_of_nesting_name_the_rule(as_text):
    document = "[" * 10000 + "]" * 10000 if as_text else nested(10000)
    with pytest.raises(ConfigError) as caught:
        parse_network_config(document)
    assert caught.value.key == "config"
    assert caught.value.rule.startswith("nests objects and lists more than %d levels deep" % MAX_DEPTH)


@pytest.mark.parametrize("as_text", [True, False])
def test_depth_limit_is_exact(as_text):
    # MAX_DEPTH levels are read (the unknown key is refused, not the depth); one more is not.
    at_limit = dict(TUTORIAL_DICT, Extra=nested(MAX_DEPTH - 1))
    over = dict(TUTORIAL_DICT, Extra=nested(MAX_DEPTH))
    with pytest.raises(ConfigError) as caught:
        parse_network_config(json.dumps(at_limit) if as_text else at_limit)
    assert caught.value.key == "Extra"
    with pytest.raises(ConfigError) as caught:
        parse_network_config(json.dumps(over) if as_text else over)
    assert caught.value.key == "config" and "levels deep" in caught.value.rule


def test_brackets_inside_strings_do_not_count_as_depth():
    config = dict(TUTORIAL_DICT, Backend={"Type": "vxlan", "VNI": 100})
    text = json.dumps(config)[:-1] + ', "Notes": "%s"}' % ("[{" * 100 + '\\" ]]')
    with pytest.raises(ConfigError) as caught:
        parse_network_config(text)
    assert caught.value.key == "Notes"  # reached the key check: the depth was right


def test_self_referencing_data_is_too_deep_not_endless():
    loop = {"Network": "10.0.0.0/8"}
    loop["Backend"] = loop
    with pytest.raises(ConfigError) as caught:
        parse_network_config(loop)
    assert "levels deep" in caught.value.rule


@pytest.mark.parametrize("as_text", [True, False])
def test_several_megabytes_are_refused_by_size(as_text):
    big = dict(TUTORIAL_DICT, Backend={"Type": "vxlan", "VNI": 100, "Padding": "x" * (3 * 1024 * 1024)})
    with pytest.raises(ConfigError) as caught:
        parse_network_config(json.dumps(big) if as_text else big)
    assert caught.value.key == "config"
    assert caught.value.rule.startswith("is %d bytes of JSON, above the limit of %d bytes"
                                        % (len(json.dumps(big, separators=(",", ":")) if not as_text
                                               else json.dumps(big)), MAX_CONFIG_BYTES))


def test_size_limit_counts_bytes_not_characters():
    padding = "\u00e9" * (MAX_CONFIG_BYTES // 2)  # two bytes each in UTF-8
    text = json.dumps(dict(TUTORIAL_DICT, Notes=padding), ensure_ascii=False)
    assert len(text) < MAX_CONFIG_BYTES < len(text.encode())
    with pytest.raises(ConfigError) as caught:
        parse_network_config(text)
    assert caught.value.key == "config" and "above the limit" in caught.value.rule


def test_data_that_is_not_json_is_named():
    with pytest.raises(ConfigError) as caught:
        parse_network_config({"Network": "10.0.0.0/8", "Backend": {"Type": {1, 2}}})
    assert caught.value.key == "config"
    assert caught.value.rule.startswith("must be JSON data")


def test_long_values_are_cut_in_messages():
    with pytest.raises(ConfigError) as caught:
        parse_network_config({"Network": "10." + "9" * 5000})
    assert caught.value.key == "Network"
    assert len(str(caught.value)) < 200


# ---- unknown keys ----------------------------------------------------------------------------

TUTORIAL_DICT = json.loads(TUTORIAL)


@pytest.mark.parametrize("document, key, rule", [
    (dict(TUTORIAL_DICT, Netwrok="10.0.0.0/8"), "Netwrok",
     'unknown key (did you mean "Network"? known keys: Network, SubnetLen, SubnetMin, SubnetMax, Backend, '
     'EnableIPv4, EnableIPv6, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax)'),
    (dict(TUTORIAL_DICT, Backend={"Type": "vxlan", "VNl": 100}), "Backend.VNl",
     'unknown key (did you mean "VNI"? known keys: Type, VNI, Port, GBP, DirectRouting, MTU)'),
    (dict(TUTORIAL_DICT, Backend={"Typ": "vxlan"}), "Backend.Typ", 'unknown key (did you mean "Type"?'),
    (dict(TUTORIAL_DICT, subnet_len=24), "subnet_len", 'did you mean "SubnetLen"?'),
    (dict(TUTORIAL_DICT, EnableNFTables=True), "EnableNFTables",
     "unknown key (known keys: Network, SubnetLen, SubnetMin, SubnetMax, Backend, EnableIPv4, EnableIPv6, "),
    ({"Network": "10.0.0.0/8", "Backend": {"Type": "host-gw", "VNI": 100}}, "Backend.VNI",
     "not an option of backend host-gw (its keys: Type)"),
    (dict(TUTORIAL_DICT, network="10.0.0.0/16"), "network",
     "given twice, as Network and network: keys are case-insensitive (the last one counts)"),
    ('{"Network": "10.0.0.0/8", "Network": "10.0.0.0/16", "Backend": {"Type": "host-gw"}}', "Network",
     "given more than once (the last one counts)"),
])
def test_unknown_and_repeated_keys_are_refused_naming_the_closest_key(document, key, rule):
    with pytest.raises(ConfigError) as caught:
        parse_network_config(document)
    assert caught.value.key == key
    assert rule in caught.value.rule


def test_unknown_key_is_reported_before_the_network_it_misspells():
    with pytest.raises(ConfigError) as caught:
        parse_network_config({"Netwrok": "10.0.0.0/8", "Backend": {"Type": "vxlan"}})
    assert caught.value.key == "Netwrok"


def test_keys_stay_case_insensitive():
    config = parse_network_config({"NETWORK": "10.0.0.0/8", "backend": {"TYPE": "vxlan", "vni": 7, "gbp": True}})
    assert config.backend.vni == 7 and config.backend.gbp is True and config.warnings == []


def test_agent_mode_warns_and_ignores_unknown_keys():
    document = dict(TUTORIAL_DICT, Netwrok="192.168.0.0/16", EnableNFTables=False,
                    Backend={"Type": "vxlan", "VNI": 100, "Port": 8472, "VNl": 5})
    config = parse_network_config(json.dumps(document), strict=False)
    assert config == parse_network_config(TUTORIAL)
    assert config.backend.vni == 100
    assert sorted(config.warnings) == sorted([
        'Netwrok: unknown key (did you mean "Network"? known keys: Network, SubnetLen, SubnetMin, SubnetMax, '
        'Backend, EnableIPv4, EnableIPv6, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax), ignored',
        "EnableNFTables: unknown key (known keys: Network, SubnetLen, SubnetMin, SubnetMax, Backend, EnableIPv4, "
        "EnableIPv6, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax), ignored",
        'Backend.VNl: unknown key (did you mean "VNI"? known keys: Type, VNI, Port, GBP, DirectRouting, MTU), '
        'ignored'])


def test_agent_mode_keeps_the_last_of_repeated_keys_as_flanneld():
    text = '{"network": "10.1.0.0/16", "Network": "10.2.0.0/16", "Backend": {"Type": "host-gw", "VNI": 1}}'
    config = parse_network_config(text, strict=False)
    assert str(config.network) == "10.2.0.0/16"
    assert config.warnings == [
        "Network: given twice, as network and Network: keys are case-insensitive (the last one counts), ignored",
        "Backend.VNI: not an option of backend host-gw (its keys: Type), ignored"]


def test_agent_mode_caps_the_warnings():
    document = dict(TUTORIAL_DICT, **dict(("Junk%d" % number, number) for number in range(50)))
    config = parse_network_config(document, strict=False)
    assert len(config.warnings) == 11
    assert config.warnings[-1] == "and 40 more such keys, ignored"


def test_agent_mode_names_the_ignored_key_when_network_is_missing():
    with pytest.raises(ConfigError) as caught:
        parse_network_config({"Netwrok": "10.0.0.0/8", "Backend": {"Type": "vxlan"}}, strict=False)
    assert caught.value.key == "Network"
    assert 'is required' in caught.value.rule and 'Netwrok: unknown key (did you mean "Network"?' in caught.value.rule


def test_agent_mode_still_applies_every_value_rule():
    with pytest.raises(ConfigError) as caught:
        parse_network_config({"Network": "10.1.2.3/8", "Backend": {"Type": "vxlan"}, "Extra": 1}, strict=False)
    assert caught.value.key == "Network" and "host bits" in caught.value.rule


# ---- Network ---------------------------------------------------------------------------------

@pytest.mark.parametrize("network, rule", [
    ("10.1.2.3/8", "10.1.2.3/8 has host bits set: must be a network address, such as 10.0.0.0/8"),
    ("10.0.0.0/8 ", 'must not have surrounding whitespace, got "10.0.0.0/8 "'),
    (" 10.0.0.0/8", 'must not have surrounding whitespace, got " 10.0.0.0/8"'),
    ("10.0.0.0/ 8", "must be an IPv4 CIDR such as 10.0.0.0/8"),
    ("10.0.0.0/08", "must be an IPv4 CIDR such as 10.0.0.0/8"),
    ("010.0.0.0/8", "must be an IPv4 CIDR such as 10.0.0.0/8"),
    ("10/8", "must be an IPv4 CIDR such as 10.0.0.0/8"),
    ("10.0.0.0/33", "must be an IPv4 CIDR such as 10.0.0.0/8"),
    ("0.0.0.0/0", "0.0.0.0/0 is the whole address space"),
    ("0.0.0.0/8", "0.0.0.0/8 overlaps the 'this network' range 0.0.0.0/8"),
    ("127.0.0.0/8", "127.0.0.0/8 overlaps the loopback range 127.0.0.0/8: must be IPv4 unicast space"),
    ("127.1.0.0/16", "overlaps the loopback range"),
    ("64.0.0.0/2", "64.0.0.0/2 overlaps the loopback range 127.0.0.0/8"),
    ("169.254.0.0/16", "169.254.0.0/16 overlaps the link-local range 169.254.0.0/16"),
    ("224.0.0.0/4", "224.0.0.0/4 overlaps the multicast range 224.0.0.0/4"),
    ("239.1.0.0/16", "overlaps the multicast range"),
    ("240.0.0.0/8", "240.0.0.0/8 overlaps the reserved and broadcast range 240.0.0.0/4"),
    ("128.0.0.0/1", "overlaps the link-local range"),
])
def test_network_must_be_a_unicast_network_address(network, rule):
    with pytest.raises(ConfigError) as caught:
        parse_network_config({"Network": network, "Backend": {"Type": "vxlan"}})
    assert caught.value.key == "Network"
    assert rule in caught.value.rule


@pytest.mark.parametrize("key, value, rule", [
    ("SubnetMin", " 10.10.0.0", 'must not have surrounding whitespace, got " 10.10.0.0"'),
    ("SubnetMax", "10.99.0.0\n", 'must not have surrounding whitespace, got "10.99.0.0\\n"'),
    ("SubnetMin", "10.010.0.0", "must be an IPv4 address"),
])
def test_bounds_are_addresses_without_whitespace(key, value, rule):
    with pytest.raises(ConfigError) as caught:
        parse_network_config(dict(TUTORIAL_DICT, **{key: value}))
    assert caught.value.key == key
    assert rule in caught.value.rule


# ---- the hosts' own addresses ----------------------------------------------------------------

def test_network_containing_a_host_address_is_refused_naming_the_host():
    config = parse_network_config({"Network": "192.168.0.0/16", "Backend": {"Type": "vxlan"}})
    with pytest.raises(ConfigError) as caught:
        check_host_addresses(config, {"docker-node1": "192.168.205.10", "docker-node2": "192.168.205.11"})
    assert caught.value.key == "Network"
    assert caught.value.rule == ("192.168.0.0/16 contains the address 192.168.205.10 of host docker-node1: "
                                 "the overlay must not cover the hosts' own network")


def test_host_addresses_outside_the_network_and_host_names_pass():
    config = parse_network_config(TUTORIAL)
    check_host_addresses(config, {"docker-node1": "192.168.205.10", "named": "docker-node2", "none": "",
                                  "six": "fd00::1", "decimal": "167772161", "nothing": None})
    check_host_addresses(config, {})
    check_host_addresses(config, None)


def test_underlay_address_inside_the_network_is_refused_naming_whose_it_is():
    # The agent's pairs: its public IP, its interface's addresses, the live leases' PublicIPs.
    config = parse_network_config({"Network": "172.31.0.0/16", "Backend": {"Type": "vxlan"}})
    underlay = [("192.168.1.5", "this host (its public IP)"), ("172.31.251.11", "this host (interface eth0)"),
                ("172.31.250.12", "the host holding lease 10.10.16.0/20")]
    with pytest.raises(ConfigError) as caught:
        check_underlay_addresses(config, underlay)
    assert caught.value.key == "Network"
    assert caught.value.rule == ("172.31.0.0/16 contains the address 172.31.251.11 of this host (interface eth0): "
                                 "the overlay must not cover the hosts' own network")
    with pytest.raises(ConfigError, match="172.31.250.12 of the host holding lease 10.10.16.0/20"):
        check_underlay_addresses(config, underlay[:1] + underlay[2:])


def test_subnet_range_over_a_host_address_is_refused_by_its_network():
    config = parse_network_config({"Network": "172.16.0.0/12", "SubnetMin": "172.31.250.0",
                                   "SubnetMax": "172.31.250.0", "Backend": {"Type": "vxlan"}})
    with pytest.raises(ConfigError, match="^Network: 172.16.0.0/12 contains the address 172.31.250.11 of "):
        check_underlay_addresses(config, [("172.31.250.11", "this host (its public IP)")])


def test_underlay_addresses_outside_the_network_pass():
    config = parse_network_config(TUTORIAL)
    check_underlay_addresses(config, [("172.31.250.11", "this host (its public IP)"), ("11.0.0.1", "a peer"),
                                      ("9.255.255.255", "a peer"), ("", "nobody"), (None, "nobody")])
    check_underlay_addresses(config, [])
