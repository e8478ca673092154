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
    assert options.iface == [] and options.reconcile_interval == 300


@pytest.mark.parametrize("argv", [
    ["-iface=192.168.205.10", "-ip-masq", "-healthz-port", "8471"],
    ["--iface", "192.168.205.10", "--ip-masq=true", "--healthz-port=8471"],
    ["-iface", "192.168.205.10", "-ip-masq=1", "--healthz-port", "8471"],
])
def test_every_spelling(argv):
    options = parse_args(argv, environ={})
    assert (options.iface, options.ip_masq, options.healthz_port) == (["192.168.205.10"], True, 8471)


def test_repeatable_and_environment():
    environ = {"FLANNELD_IFACE": "eth1", "FLANNELD_ETCD_PREFIX": "/x/network", "FLANNELD_IP_MASQ": "true"}
    options = parse_args(["-etcd-prefix=/flag/wins"], environ=environ)
    assert options.iface == ["eth1"]
    assert options.etcd_prefix == "/flag/wins"
    assert options.ip_masq is True
    assert parse_args(["-iface=a", "-iface=b"], environ=environ).iface == ["a", "b"]


@pytest.mark.parametrize("variable, value, attribute", [
    ("FLANNELD_IFACE_REGEX", "^eth[0-9]{1,2}$", "iface_regex"),
    ("FLANNELD_IFACE_REGEX", "^(10|192),", "iface_regex"),
    ("FLANNELD_IFACE", "eth1,eth2", "iface"),  # flanneld v0.10 looks up one interface "eth1,eth2"
    ("FLANNELD_IFACE", " eth1 ", "iface"),
])
def test_environment_value_is_one_value_never_split(variable, value, attribute):
    assert getattr(parse_args([], environ={variable: value}), attribute) == [value]


def test_a_comma_in_a_regex_from_the_environment_is_checked_whole():
    with pytest.raises(UsageError) as caught:
        parse_args([], environ={"FLANNELD_IFACE_REGEX": "^eth[0-9]{1,2},(x"})
    assert "invalid value '^eth[0-9]{1,2},(x' for FLANNELD_IFACE_REGEX: not a regular expression" in str(caught.value)


def test_commands_take_no_environment_variable():
    options = parse_args([], environ={"FLANNELD_VERSION": "true", "FLANNELD_HELP": "true"})
    assert options.version is False and options.help is False


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
    (["-public-ip=not-an-ip"], "for -public-ip: must be an IPv4 unicast address other hosts reach this one at: "
                               '"not-an-ip" is not an IPv4 address'),
    (["-public-ip=2001:db8::1"], "-public-ip: must be an IPv4 unicast address other hosts reach this one at: "
                                 "2001:db8::1 is not an IPv4 address (the data plane is IPv4)"),
    (["-public-ip=127.0.0.1"], "127.0.0.1 is not a unicast address (it is in 127.0.0.0/8)"),
    (["-public-ip=224.0.0.1"], "224.0.0.1 is not a unicast address (it is in 224.0.0.0/4)"),
    (["-public-ip=0.0.0.0"], "0.0.0.0 is not a unicast address (it is in 0.0.0.0/8)"),
    (["-public-ip= 192.168.205.10"], "for -public-ip: must be an IPv4 unicast address"),
    (["-healthz-ip=not-an-ip"], "for -healthz-ip: must be an IPv4 address to listen on"),
    (["-healthz-ip=::1"], "for -healthz-ip: must be an IPv4 address to listen on"),
    (["-iface-regex=(eth"], "for -iface-regex: not a regular expression: missing ), unterminated subpattern"),
    (["-etcd-prefix="], "for -etcd-prefix: must be a key path"),
    (["-etcd-prefix=/a b"], "for -etcd-prefix: must be a key path"),
    (["-etcd-prefix=/x/../y"], "for -etcd-prefix: must be a key path"),
    (["-etcd-prefix=/x?recursive=true"], "for -etcd-prefix: must be a key path"),
    (["-etcd-endpoints=ftp://x"], "for -etcd-endpoints: etcd endpoint 'ftp://x' must look like http://HOST:PORT"),
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


def test_prefixes_in_use_are_accepted():
    for prefix in ("/coreos.com/network", "coreos.com/network/", "/netlab_test-1/net~work"):
        assert parse_args(["-etcd-prefix=" + prefix], environ={}).etcd_prefix == prefix


def _main_error(capsys, argv):
    assert main(argv, environ={}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flanneld: ")
    return err


@pytest.mark.parametrize("name, make, message", [
    ("parent is a file", lambda tmp: str(tmp / "file" / "subnet.env"), "cannot write a file in"),
    ("a directory", str, "it is a directory"),
    ("read-only sysfs", lambda tmp: "/sys/subnet.env", "cannot write a file in /sys"),
])
def test_unwritable_subnet_file_is_refused_before_anything_runs(capsys, tmp_path, name, make, message):
    (tmp_path / "file").write_text("x")
    path = make(tmp_path)
    err = _main_error(capsys, ["-subnet-file=" + path, "-etcd-endpoints=http://127.0.0.1:1"])
    assert "invalid value %r for -subnet-file" % path in err and message in err
    assert sorted(item.name for item in tmp_path.iterdir()) == ["file"]  # no probe left behind


def test_subnet_file_directory_is_made_when_missing(tmp_path):
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import check_files

    path = tmp_path / "run" / "flannel" / "subnet.env"
    check_files(parse_args(["-subnet-file=%s" % path], environ={}))
    assert list(path.parent.iterdir()) == []


def test_tls_files_must_be_readable(capsys, tmp_path):
    subnet_file = "-subnet-file=%s" % (tmp_path / "subnet.env")
    missing = str(tmp_path / "missing.pem")
    err = _main_error(capsys, [subnet_file, "-etcd-cafile=" + missing])
    assert "invalid value %r for -etcd-cafile: not a readable file" % missing in err
    key = tmp_path / "key.pem"
    key.write_text("key")
    err = _main_error(capsys, [subnet_file, "-etcd-keyfile=%s" % key])
    assert "flag -etcd-keyfile needs -etcd-certfile" in err
    err = _main_error(capsys, [subnet_file, "-etcd-cafile=%s" % key])
    assert "invalid value %r for -etcd-cafile: not a PEM CA certificate" % str(key) in err
    err = _main_error(capsys, [subnet_file, "-etcd-certfile=%s" % key, "-etcd-keyfile=%s" % key])
    assert "for -etcd-certfile/-etcd-keyfile: not a PEM certificate and its private key" in err


# -check-flags: the flanneld role runs the agent so before it writes the unit (issue 25).
@pytest.mark.parametrize("argv, environ", [
    (["-metrics-port=8471", "-healthz-port=8471"], {}),
    (["-subnet-lease-renew-margin=0"], {}),
    ([], {"FLANNELD_REGISTRY_TIMEOUT": "x", "FLANNELD_HEALTHZ_PORT": "abc"}),
    (["-vxlan-offload=maybe", "-iface=eth0"], {"FLANNELD_ETCD_PASSWORD": "secret"}),
    (["-bogus"], {}),
])
def test_check_flags_gives_a_starts_verdict_in_the_same_line(capsys, argv, environ):
    assert main(argv, environ=environ) == 2
    start_error = capsys.readouterr()
    assert main(["-check-flags"] + argv, environ=environ) == 2
    assert capsys.readouterr() == start_error


def test_check_flags_says_nothing_and_touches_no_file_when_the_flags_are_fine(capsys, tmp_path):
    subnet_file = tmp_path / "run" / "subnet.env"
    argv = ["-check-flags", "-etcd-endpoints=http://127.0.0.1:1", "-subnet-file=%s" % subnet_file,
            "-etcd-cafile=%s" % (tmp_path / "not-yet-installed.pem"), "-metrics-port=9100", "-healthz-port=8471"]
    assert main(argv, environ={"FLANNELD_ETCD_PASSWORD": " 'a\"b\\c $HOME %h "}) == 0
    assert capsys.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []
