"""Property-based tests of the network config parser: whatever JSON arrives, the only outcome is a
valid config or a ConfigError naming a key and a rule."""

import json

from hypothesis import HealthCheck, given, settings, strategies as st
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import (
    NOT_UNICAST, ConfigError, check_host_addresses, parse_network_config)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config_json import MAX_DEPTH

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2, max_value=2 ** 25)
           | st.floats() | st.text(max_size=20))
ANY_JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=30)

# Values near the valid ones, so that the deeper rules are reached too.
OCTET = st.integers(min_value=0, max_value=300)
ADDRESS_TEXT = st.builds("{}.{}.{}.{}".format, OCTET, OCTET, OCTET, OCTET)
CIDR_TEXT = st.builds("{}/{}".format, ADDRESS_TEXT, st.integers(min_value=0, max_value=33))
PADDED = st.builds("{}{}{}".format, st.sampled_from(["", " ", "\t"]), CIDR_TEXT, st.sampled_from(["", " ", "\n"]))
KEY_CASES = st.sampled_from([str, str.lower, str.upper])


def spelled(name):
    return KEY_CASES.map(lambda case: case(name))


BACKEND = st.dictionaries(
    st.one_of(*(spelled(name) for name in ("Type", "VNI", "Port", "GBP", "DirectRouting", "MTU", "VNl"))),
    st.one_of(st.sampled_from(["vxlan", "host-gw", "udp", "", "VXLAN"]), st.integers(min_value=-1, max_value=70000),
              st.booleans(), ANY_JSON), max_size=6)
CONFIG = st.dictionaries(
    st.one_of(*(spelled(name) for name in ("Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend",
                                           "Netwrok"))),
    st.one_of(PADDED, CIDR_TEXT, ADDRESS_TEXT, st.integers(min_value=0, max_value=33), BACKEND, ANY_JSON),
    max_size=6)


def outcome(document, strict=True):
    """The parsed config, or the ConfigError; anything else raised fails the test."""
    try:
        config = parse_network_config(document, strict=strict)
    except ConfigError as err:
        assert err.key and isinstance(err.key, str)
        assert err.rule and isinstance(err.rule, str)
        assert str(err) == "%s: %s" % (err.key, err.rule)
        return err
    assert_valid(config)
    return config


def assert_valid(config):
    network = config.network
    assert network.version == 4 and network.ip == network.network and network.prefixlen > 0
    for block, dummy in NOT_UNICAST:
        assert IPNetwork(block) not in network and network not in IPNetwork(block)
    assert network.prefixlen + 2 <= config.subnet_len <= 30
    assert config.subnet_min in network and config.subnet_max in network
    assert config.subnet_min <= config.subnet_max
    assert config.backend.type in ("vxlan", "host-gw", "udp")
    assert parse_network_config(json.dumps(config.as_dict())) == config  # what it stores, it reads back


@SETTINGS
@given(ANY_JSON, st.booleans())
def test_any_json_data_gives_a_config_or_a_config_error(document, strict):
    outcome(document, strict)


@SETTINGS
@given(ANY_JSON, st.booleans())
def test_any_json_text_gives_a_config_or_a_config_error(document, strict):
    outcome(json.dumps(document), strict)


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text):
    outcome(text)


@SETTINGS
@given(CONFIG, st.booleans())
def test_near_valid_configs_give_a_valid_config_or_a_config_error(document, strict):
    result = outcome(document, strict)
    if strict and not isinstance(result, ConfigError):
        # Strict parsing accepted it: so every key of it is a known one.
        folded = set(key.lower() for key in document)
        assert folded <= {"network", "subnetlen", "subnetmin", "subnetmax", "backend"}


@SETTINGS
@given(CONFIG)
def test_agent_mode_accepts_whatever_strict_mode_accepts(document):
    strict = outcome(document, strict=True)
    lenient = outcome(document, strict=False)
    if not isinstance(strict, ConfigError):
        assert lenient == strict and lenient.warnings == []


@SETTINGS
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", "{\"a\":"]), st.booleans())
def test_any_nesting_depth_gives_a_config_or_a_config_error(depth, opener, closed):
    closer = "]" if opener == "[" else "}"
    text = opener * depth + ("1" if opener != "[" else "") + (closer * depth if closed else "")
    result = outcome(text)
    assert isinstance(result, ConfigError)
    if depth > MAX_DEPTH:
        assert "levels deep" in result.rule


@SETTINGS
@given(CIDR_TEXT, st.dictionaries(st.text(max_size=5), ADDRESS_TEXT | st.text(max_size=10), max_size=4))
def test_host_address_check_refuses_exactly_the_covered_addresses(network, addresses):
    config = outcome({"Network": network, "Backend": {"Type": "host-gw"}})
    if isinstance(config, ConfigError):
        return
    covered = []
    for value in addresses.values():
        try:
            covered.append(IPNetwork(value + "/32", flags=0).ip in config.network)
        except Exception:  # not an address: skipped by the check
            continue
    try:
        check_host_addresses(config, addresses)
    except ConfigError as err:
        assert err.key == "Network" and any(covered)
    else:
        assert not any(covered)
