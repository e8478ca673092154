"""The wireguard backend's pure parts: its config keys, lease data, keys and the UAPI text."""

import base64
import os
import stat

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends import wireguard_keys
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard import peer_data_problem
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_device import (
    DeviceError, WgPeer, open_session_request, parse_get_reply, set_request)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import ConfigError, parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.peer_identity import lease_identity

KEY = base64.b64encode(bytes(range(1, 33))).decode()


def _config(**backend):
    return parse_network_config({"Network": "10.0.0.0/8", "Backend": dict(Type="wireguard", **backend)})


def test_defaults_and_keys_as_upstream():
    backend = _config().backend
    assert (backend.listen_port, backend.psk, backend.keepalive, backend.mtu) == (51820, None, 0, None)
    assert _config().as_dict()["Backend"] == {"Type": "wireguard", "ListenPort": 51820,
                                              "PersistentKeepaliveInterval": 0}
    backend = _config(ListenPort=5000, PSK=KEY, PersistentKeepaliveInterval=25, MTU=9000).backend
    assert (backend.listen_port, backend.psk, backend.keepalive, backend.mtu) == (5000, KEY, 25, 9000)


@pytest.mark.parametrize("backend, key, rule", [
    ({"ListenPort": 0}, "Backend.ListenPort", "must be between 1 and 65535, got 0"),
    ({"ListenPort": "51820"}, "Backend.ListenPort", "must be an integer"),
    ({"PersistentKeepaliveInterval": -1}, "Backend.PersistentKeepaliveInterval", "between 0 (off) and 65535"),
    ({"MTU": 500}, "Backend.MTU", "must be between 576 and 65455, got 500"),
    ({"PSK": "secret-but-not-a-key"}, "Backend.PSK", "got 20 characters that are not one"),
])
def test_bad_options_name_the_key_and_never_show_the_psk(backend, key, rule):
    with pytest.raises(ConfigError) as error:
        _config(**backend)
    assert error.value.key == key and rule in error.value.rule
    assert "secret-but-not-a-key" not in str(error.value)


def test_the_config_as_logged_never_shows_the_psk():
    config = _config(PSK=KEY)
    assert KEY not in repr(config) and '"PSK": "(set, not shown)"' in repr(config)
    assert config.backend.psk == KEY and config.as_dict()["Backend"]["PSK"] == KEY  # the digest still covers it
    assert config.secrets() == [KEY] and config.shown()["Backend"]["PSK"] == "(set, not shown)"
    assert _config().secrets() == [] and "PSK" not in _config().shown()["Backend"]


def test_lease_data_round_trip_and_identity():
    text = '{"PublicIP":"192.0.2.7","BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820}}' % KEY
    attrs = LeaseAttrs.from_json(text)
    assert attrs.to_json() == text and peer_data_problem(attrs) is None
    assert lease_identity("wireguard", attrs) == ("PublicKey", KEY)
    assert lease_identity("vxlan", attrs) == ("PublicIP", "192.0.2.7")
    hostile = LeaseAttrs.from_json('{"PublicIP":"192.0.2.7","BackendType":"wireguard",'
                                   '"BackendData":{"publickey":"AAAA","port":70000}}')
    assert "is not a WireGuard key" in peer_data_problem(hostile)
    hostile.backend_data["publickey"] = KEY
    assert peer_data_problem(hostile) == "Port: 70000 is not a UDP port (1 to 65535)"
    assert "PublicKey" in peer_data_problem(LeaseAttrs("192.0.2.7", "wireguard"))


def test_public_key_matches_rfc_7748s_vector():
    private = base64.b64encode(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    assert base64.b64decode(wireguard_keys.public_key(private.decode())).hex() == \
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


@pytest.mark.parametrize("text", [None, 7, "", "A" * 44, KEY[:-2] + "B=", base64.b64encode(bytes(32)).decode(),
                                  base64.b64encode(bytes(31)).decode()])
def test_malformed_keys_are_named(text):
    assert wireguard_keys.key_problem(text)


def test_key_file_is_created_once_private_and_a_bad_one_is_never_replaced(tmp_path):
    path = str(tmp_path / "run" / "wgkey")
    key, created = wireguard_keys.load_or_create_private_key(path)
    assert created and wireguard_keys.key_problem(key) is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o644)
    assert wireguard_keys.load_or_create_private_key(path) == (key, False)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "w") as handle:
        handle.write("operator's notes\n")
    with pytest.raises(wireguard_keys.KeyFileError, match="holds no private key"):
        wireguard_keys.load_or_create_private_key(path)
    assert open(path).read() == "operator's notes\n"


def test_uapi_set_and_get_text():
    peer = WgPeer(KEY, "192.0.2.7:51820", ("10.1.0.0/24",), 25, None)
    request = set_request(None, 51820, [peer], [KEY])
    hex_key = bytes(range(1, 33)).hex()
    assert request == ("set=1\nlisten_port=51820\npublic_key=%s\nremove=true\npublic_key=%s\npreshared_key=%s\n"
                       "endpoint=192.0.2.7:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n"
                       "allowed_ip=10.1.0.0/24\n\n" % (hex_key, hex_key, "0" * 64))
    state = parse_get_reply("private_key=%s\nlisten_port=51820\npublic_key=%s\npreshared_key=%s\n"
                            "endpoint=192.0.2.7:51820\nlast_handshake_time_sec=1700000000\n"
                            "persistent_keepalive_interval=25\nallowed_ip=10.1.0.0/24\nerrno=0\n\n"
                            % (hex_key, hex_key, "0" * 64))
    assert state.private_key == KEY and state.listen_port == 51820
    assert state.peers == {KEY: peer} and state.handshakes == {KEY: 1700000000}
    with pytest.raises(DeviceError, match="errno 22"):
        parse_get_reply("errno=22\n\n")


def test_uapi_open_session_turns_the_keepalive_on_then_back_in_one_request():
    hex_key = bytes(range(1, 33)).hex()
    assert open_session_request(KEY, 0) == ("set=1\npublic_key=%s\npersistent_keepalive_interval=1\n"
                                            "public_key=%s\npersistent_keepalive_interval=0\n\n" % (hex_key, hex_key))
