"""Leases written by anyone: the registry checks every one against the config before it is used,
junk cannot exhaust the subnet space, and etcd's own refusals become RegistryErrors."""

import random

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    LeaseAttrs, OutOfSubnets, acquire_lease)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
    RegistryAuthError, RegistryError, UnreadableKeyRemoved, make_registry)
from support.etcdserver import EtcdServer, LiveWriter, etcd_metric, v2_admin_call, v3_call

PREFIX = "/coreos.com/network"
CONFIG = parse_network_config({"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0",
                               "SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100}})
GOOD = '{"PublicIP":"192.168.205.20","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:20"}}'
# key -> (value, words the skip reason must hold)
HOSTILE = {
    "10.20.0.0-20": ('{"PublicIP":"192.168.205.21","BackendType":"vxlan","BackendData":{"VtepMAC":"zz:zz"}}',
                     'VtepMAC: "zz:zz" is not a MAC address'),
    "192.168.0.0-24": (GOOD, "subnet 192.168.0.0/24 is not a /20 inside the Network 10.0.0.0/8"),
    "0.0.0.0-0": (GOOD, "subnet 0.0.0.0/0 is not a /20 inside the Network"),
    "10.0.0.0-8": (GOOD, "subnet 10.0.0.0/8 is not a /20 inside the Network"),
    "10.21.0.0-20": ('{"PublicIP":"10.1.2.3","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:21"}}',
                     "PublicIP 10.1.2.3 is inside the overlay network 10.0.0.0/8"),
    "10.22.0.0-20": ('{"PublicIP":"192.168.205.22","BackendType":"nope"}', 'BackendType "nope" is not a flannel'),
    "10.23.0.0-20": ("[" * 5000 + "]" * 5000, "above the limit of 4096"),
    "10.24.0.0-20": ('{"PublicIP":"fe80::1","BackendType":"host-gw"}', "not an IPv4 address"),
    "10.25.7.0-20": (GOOD, "10.25.7.0-20' is not written as flannel writes 10.25.0.0-20"),
}


def _write_hostile(raw):
    for key, (value, _reason) in HOSTILE.items():
        raw.write("%s/subnets/%s" % (PREFIX, key), value)
    raw.write(PREFIX + "/subnets/10.30.0.0-20", GOOD)


def test_listing_under_the_config_keeps_only_valid_leases(registry, raw):
    _write_hostile(raw)
    listing = registry.list_leases(CONFIG)
    assert [str(lease.subnet) for lease in listing.leases] == ["10.30.0.0/20"]
    reasons = dict((key.rsplit("/", 1)[1], reason) for key, reason in listing.skipped)
    assert sorted(reasons) == sorted(HOSTILE)
    for key, (_value, words) in HOSTILE.items():
        assert words in reasons[key], (key, reasons[key])
    # Every key named like a subnet counts as taken, whatever its value.
    assert "10.20.0.0/20" in [str(subnet) for subnet in listing.taken]


def test_watch_under_the_config_skips_and_unroutes(registry, raw):
    raw.write(PREFIX + "/subnets/10.20.0.0-20", GOOD)
    index = registry.list_leases(CONFIG).index
    raw.write(PREFIX + "/subnets/10.20.0.0-20", HOSTILE["10.20.0.0-20"][0])
    events, index, skipped = registry.watch_leases(index, 2, CONFIG)
    assert [(str(event.subnet), event.removed) for event in events] == [("10.20.0.0/20", True)]
    assert "VtepMAC" in skipped[1]
    raw.write(PREFIX + "/subnets/192.168.0.0-24", GOOD)
    events, index, skipped = registry.watch_leases(index, 2, CONFIG)
    assert events == [] and "not a /20 inside the Network" in skipped[1]


def test_junk_cannot_exhaust_the_space_or_stop_acquisition(registry, raw):
    _write_hostile(raw)
    attrs = LeaseAttrs("192.168.205.40", "vxlan", "0e:00:00:00:00:40")
    # The previous subnet's key holds junk: it cannot be created, so another one is taken.
    lease = acquire_lease(registry, CONFIG, attrs, previous_subnet=IPNetwork("10.20.0.0/20"), rng=random.Random(1))
    assert lease.subnet != IPNetwork("10.20.0.0/20") and CONFIG.is_compatible(lease.subnet)
    assert str(lease.subnet) not in ("10.21.0.0/20", "10.22.0.0/20", "10.23.0.0/20", "10.24.0.0/20", "10.30.0.0/20")


SMALL = parse_network_config({"Network": "10.5.0.0/16", "SubnetLen": 20, "Backend": {"Type": "vxlan", "VNI": 1}})


def test_junk_at_every_free_key_is_no_free_subnet_with_the_count(api, registry, raw):
    """Keys in range whose values are not leases keep their subnets (another tool may own them):
    a full space says how many there are; a lease is taken once one is deleted."""
    candidates = list(SMALL.candidate_subnets())  # 10.5.16.0/20 ... 10.5.240.0/20: 15
    keys = ["%s/subnets/%s-20" % (PREFIX, subnet.ip) for subnet in candidates]
    raw.write(keys[0], GOOD)
    junk = ["not JSON", "[1]", '{"PublicIP": NaN}', "null", GOOD.replace("192.168.205.20", "10.5.0.1")]
    for number, key in enumerate(keys[1:]):
        if api == "v2" and number % 5 == 0:
            raw.write(key, None, dir=True)  # a directory: it too stops a create at its key
        else:
            raw.write(key, junk[number % len(junk)])
    attrs = LeaseAttrs("192.168.205.40", "vxlan", "0e:00:00:00:00:40")
    with pytest.raises(OutOfSubnets) as caught:
        acquire_lease(registry, SMALL, attrs, rng=random.Random(1))
    assert str(caught.value) == ("no free subnet: every /20 between 10.5.16.0 and 10.5.240.0 has a key; 14 keys "
                                 "in range hold no valid lease (delete them to free their subnets)")
    raw.delete(keys[6], dir=True) if api == "v2" else raw.delete(keys[6])
    assert acquire_lease(registry, SMALL, attrs).subnet == candidates[6]


def test_a_key_nested_below_subnets_is_no_lease(api, registry, raw):
    raw.write(PREFIX + "/subnets/somedir/10.30.0.0-20", GOOD)
    index = registry.list_leases(CONFIG).index
    listing = registry.list_leases(CONFIG)
    assert listing.leases == [] and listing.taken == []
    assert "not a subnet lease key" in listing.skipped[0][1]
    raw.write(PREFIX + "/subnets/somedir/10.30.0.0-20", GOOD.replace(".20", ".21"))
    events, index, skipped = registry.watch_leases(index, 2, CONFIG)
    assert events == [] and "not a subnet lease key" in skipped[1]


def test_public_ip_on_an_onlink_broadcast_or_network_address_is_skipped(registry, raw):
    registry.onlink_prefixes = lambda: {IPNetwork("192.168.205.10/24")}
    for key, public_ip in (("10.20.0.0-20", "192.168.205.255"), ("10.21.0.0-20", "192.168.205.0"),
                           ("10.22.0.0-20", "192.168.205.22")):
        raw.write("%s/subnets/%s" % (PREFIX, key), GOOD.replace("192.168.205.20", public_ip))
    listing = registry.list_leases(CONFIG)
    assert [str(lease.subnet) for lease in listing.leases] == ["10.22.0.0/20"]
    assert sorted(reason for _key, reason in listing.skipped) == [
        "PublicIP 192.168.205.0 is the network address of the on-link prefix 192.168.205.0/24",
        "PublicIP 192.168.205.255 is the broadcast address of the on-link prefix 192.168.205.0/24"]
    raw.write(PREFIX + "/subnets/10.22.0.0-20", GOOD.replace("192.168.205.20", "192.168.205.255"))
    events, index, skipped = registry.watch_leases(listing.index, 2, CONFIG)
    assert [(str(event.subnet), event.removed) for event in events] == [("10.22.0.0/20", True)]
    assert "broadcast address of the on-link prefix" in skipped[1]


def test_deleting_an_unreadable_key_is_an_event_naming_it(api, registry, raw):
    key = PREFIX + "/subnets/not-a-subnet"
    raw.write(key, "{}")
    index = registry.list_leases(CONFIG).index
    raw.delete(key)
    events, index, skipped = registry.watch_leases(index, 2, CONFIG)
    assert skipped is None and len(events) == 1
    assert isinstance(events[0], UnreadableKeyRemoved) and events[0].key == key


def test_subnets_written_as_a_plain_key_is_a_registry_error(api, registry, raw):
    raw.write(PREFIX + "/subnets", "not a directory")
    attrs = LeaseAttrs("192.168.205.40", "vxlan", "0e:00:00:00:00:40")
    if api == "v3":  # v3 has no directories: the key is outside <prefix>/subnets/ and harmless
        assert CONFIG.is_compatible(acquire_lease(registry, CONFIG, attrs).subnet)
        return
    with pytest.raises(RegistryError) as caught:
        acquire_lease(registry, CONFIG, attrs)
    assert "etcd refused an operation under /coreos.com/network" in str(caught.value)


def _auth_call(server, method, path, body=None, user=None):
    return v2_admin_call(server.endpoint, method, path, body, user)


@pytest.fixture(scope="module", params=["v2", "v3"])
def auth_etcd(request):
    """An etcd of its own with authentication on: root/rootpw; on v2 the guest role stripped, on
    v3 (v2 off) nothing is open without a user."""
    server = EtcdServer(enable_v2=request.param == "v2").start()
    server.api = request.param
    try:
        if server.api == "v3":
            for path, body in (("user/add", {"name": "root", "password": "rootpw"}), ("role/add", {"name": "root"}),
                               ("user/grant", {"user": "root", "role": "root"}), ("enable", {})):
                v3_call(server.endpoint, "/v3/auth/" + path, body)
        else:
            _auth_call(server, "PUT", "/v2/auth/users/root", {"user": "root", "password": "rootpw"})
            _auth_call(server, "PUT", "/v2/auth/enable")
            _auth_call(server, "PUT", "/v2/auth/roles/guest",
                       {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}, user="root:rootpw")
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("username, password", [("root", "wrong"), (None, None), ("nobody", "x")])
def test_refused_credentials_are_a_one_line_registry_auth_error(auth_etcd, username, password):
    registry = make_registry(auth_etcd.api, endpoints=auth_etcd.endpoint, username=username, password=password,
                             timeout=2)
    for call in (registry.get_config, registry.list_leases, lambda: registry.watch_leases(0, 0.5)):
        with pytest.raises(RegistryAuthError) as caught:
            call()
        message = str(caught.value)
        assert "refused access to /coreos.com/network" in message and "-etcd-password" in message
        assert "\n" not in message and "wrong" not in message
    right = make_registry(auth_etcd.api, endpoints=auth_etcd.endpoint, username="root", password="rootpw")
    assert right.list_leases().leases == []
    right.put_config('{"Network": "10.0.0.0/8"}')
    assert right.get_config() == '{"Network": "10.0.0.0/8"}'
    right.close()


def test_right_credentials_are_sent_with_the_watch_too(auth_etcd):
    registry = make_registry(auth_etcd.api, endpoints=auth_etcd.endpoint, username="root", password="rootpw")
    index = registry.list_leases().index
    registry.put_config('{"Network": "10.1.0.0/16"}')
    events, index = registry.watch_leases(index, 2, with_config=True)[:2]
    assert [event.text for event in events] == ['{"Network": "10.1.0.0/16"}']
    if auth_etcd.api == "v2":  # and with the v2 watch's stream: two live changes on one request
        writer = LiveWriter(make_registry("v2", endpoints=auth_etcd.endpoint, username="root", password="rootpw"),
                            auth_etcd.endpoint, lambda number: LeaseAttrs("192.168.205.%d" % number, "vxlan", "0e:00:00:00:00:%02x" % number))
        requests = etcd_metric(auth_etcd.endpoint, "etcd_debugging_store_watch_requests_total")
        seen = []
        for number, subnet in enumerate([IPNetwork("10.1.16.0/20"), IPNetwork("10.1.32.0/20")]):
            events, index = writer.watch(registry, index, number + 5, subnet, True)
            seen.extend(event.subnet for event in events)
        requests = etcd_metric(auth_etcd.endpoint, "etcd_debugging_store_watch_requests_total") - requests
        assert seen == [IPNetwork("10.1.16.0/20"), IPNetwork("10.1.32.0/20")] and requests == 1, (seen, requests)
    registry.close()
