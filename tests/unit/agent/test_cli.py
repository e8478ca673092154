"""flanneld's flag spellings, environment variables and usage errors."""

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import UsageError, main, parse_args


def test_defaults_match_flanneld():
    options = parse_args([], environ={})
    assert options.etcd_endpoints == "http://127.0.0.1:2379"
    assert options.etcd_prefix == "/coreos.com/network"
    assert options.subnet_file == "/run/flannel/subnet.env"
    assert options.subnet_lease_renew_margin == 60
    assert options.ip_masq is False and options.healthz_port == 0 and options.healthz_ip == "0.0.0.0"
    assert options.iface == [] and options.reconcile_interval == 10


@pytest.mark.parametrize("argv", [
    ["-iface=192.168.205.10", "-ip-masq", "-healthz-port", "8471"],
    ["--iface", "192.168.205.10", "--ip-masq=true", "--healthz-port=8471"],
    ["-iface", "192.168.205.10", "-ip-masq=1", "--healthz-port", "8471"],
])
def test_every_spelling(argv):
    options = parse_args(argv, environ={})
    assert (options.iface, options.ip_masq, options.healthz_port) == (["192.168.205.10"], True, 8471)


def test_repeatable_and_environment():
    environ = {"FLANNELD_IFACE": "eth1,eth2", "FLANNELD_ETCD_PREFIX": "/x/network", "FLANNELD_IP_MASQ": "true"}
    options = parse_args(["-etcd-prefix=/flag/wins"], environ=environ)
    assert options.iface == ["eth1", "eth2"]
    assert options.etcd_prefix == "/flag/wins"
    assert options.ip_masq is True
    assert parse_args(["-iface=a", "-iface=b"], environ=environ).iface == ["a", "b"]


@pytest.mark.parametrize("argv, message", [
    (["-nope"], "unknown flag -nope"),
    (["-subnet-lease-renew-margin=0"], "-subnet-lease-renew-margin: must be between 1 and 1439"),
    (["-subnet-lease-renew-margin=1440"], "must be between 1 and 1439"),
    (["-healthz-port=x"], "-healthz-port: must be a whole number"),
    (["-healthz-port=70000"], "must be between 0 (off) and 65535"),
    (["-ip-masq=maybe"], "-ip-masq: must be true or false"),
    (["-iface"], "flag -iface needs a value"),
    (["stray"], "unexpected argument 'stray'"),
    (["-reconcile-interval=0"], "-reconcile-interval: must be above 0"),
    (["-vxlan-offload=maybe"], "invalid value 'maybe' for -vxlan-offload: must be auto, on or off"),
])
def test_usage_errors_name_the_flag(argv, message):
    with pytest.raises(UsageError) as caught:
        parse_args(argv, environ={})
    assert message in str(caught.value)


def test_vxlan_offload_flag_and_environment():
    assert parse_args([], environ={}).vxlan_offload == "auto"
    assert parse_args([], environ={"FLANNELD_VXLAN_OFFLOAD": "off"}).vxlan_offload == "off"
    assert parse_args(["-vxlan-offload", "on"], environ={"FLANNELD_VXLAN_OFFLOAD": "off"}).vxlan_offload == "on"


def test_bad_environment_value_names_the_variable():
    with pytest.raises(UsageError) as caught:
        parse_args([], environ={"FLANNELD_HEALTHZ_PORT": "abc"})
    assert "FLANNELD_HEALTHZ_PORT" in str(caught.value)


def test_main_exit_codes(capsys):
    assert main(["-bogus"], environ={}) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["-version"], environ={}) == 0
    assert main(["-help"], environ={}) == 0
    assert "-subnet-lease-renew-margin" in capsys.readouterr().out
    assert main(["-etcd-endpoints=ftp://x"], environ={}) == 2
