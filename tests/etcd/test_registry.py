"""The registries and lease acquisition against a real etcd: each test runs on the v2 API and on the
v3 API of an etcd with v2 off (the `api` fixture)."""

import random
import time

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    LeaseAttrs, LeaseError, OutOfSubnets, acquire_lease)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
    ConfigMissing, IndexCleared, RegistryAuthError, RegistryUnavailable, make_registry)

PREFIX = "/coreos.com/network"
CONFIG = parse_network_config({"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0",
                               "SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100}})


def raw_endpoint(registry):
    """The one endpoint a test registry was made with."""
    return registry._endpoints[0] if registry.api == "v3" else registry._clients[0].base_uri


def _attrs(last_octet):
    return LeaseAttrs("192.168.205.%d" % last_octet, "vxlan", "0e:00:00:00:00:%02x" % last_octet)


def test_leases_are_distinct_and_stored_exactly_as_flanneld(registry, raw):
    leases = [acquire_lease(registry, CONFIG, _attrs(n)) for n in range(10, 20)]
    assert len(set(lease.subnet for lease in leases)) == 10
    for number, lease in zip(range(10, 20), leases):
        node = raw.read("%s/subnets/%s-20" % (PREFIX, lease.subnet.ip))
        assert node.value == ('{"PublicIP":"192.168.205.%d","BackendType":"vxlan",'
                              '"BackendData":{"VtepMAC":"0e:00:00:00:00:%02x"}}' % (number, number))
        assert 86390 < node.ttl <= 86400
        assert CONFIG.is_compatible(lease.subnet)


def test_same_public_ip_reuses_its_lease(api, registry, raw):
    first = acquire_lease(registry, CONFIG, _attrs(10))
    key = "%s/subnets/%s-20" % (PREFIX, first.subnet.ip)
    again = acquire_lease(registry, CONFIG, _attrs(10), previous_subnet=IPNetwork("10.50.0.0/20"))
    assert again.subnet == first.subnet and len(registry.list_leases().leases) == 1
    if api == "v2":  # a v2 refresh moves the index
        assert again.modified_index > first.modified_index
    else:  # one etcd lease, kept alive: the key is not rewritten
        assert again.modified_index == first.modified_index and again.etcd_lease == first.etcd_lease
    assert 86390 < raw.read(key).ttl <= 86400


def test_previous_subnet_taken_when_free_and_never_stolen(registry):
    wanted = IPNetwork("10.42.0.0/20")
    assert acquire_lease(registry, CONFIG, _attrs(10), previous_subnet=wanted).subnet == wanted
    other = acquire_lease(registry, CONFIG, _attrs(11), previous_subnet=wanted)
    assert other.subnet != wanted
    stored = dict((lease.subnet, lease.attrs.public_ip) for lease in registry.list_leases().leases)
    assert stored[wanted] == "192.168.205.10"


def test_incompatible_lease_is_replaced(registry, raw):
    raw.write(PREFIX + "/subnets/10.200.0.0-24", _attrs(10).to_json(), ttl=600)
    lease = acquire_lease(registry, CONFIG, _attrs(10))
    assert CONFIG.is_compatible(lease.subnet)
    assert [l.subnet for l in registry.list_leases().leases] == [lease.subnet]


def test_reservation_without_ttl_is_kept_without_ttl(registry, raw):
    raw.write(PREFIX + "/subnets/10.20.0.0-20", _attrs(10).to_json())
    lease = acquire_lease(registry, CONFIG, _attrs(10))
    assert lease.subnet == IPNetwork("10.20.0.0/20") and lease.is_reservation
    assert raw.read(PREFIX + "/subnets/10.20.0.0-20").ttl is None


def test_out_of_subnets(registry):
    small = parse_network_config({"Network": "10.0.0.0/16", "SubnetLen": 24, "SubnetMin": "10.0.1.0",
                                  "SubnetMax": "10.0.2.0", "Backend": {"Type": "vxlan"}})
    acquire_lease(registry, small, _attrs(10))
    acquire_lease(registry, small, _attrs(11))
    with pytest.raises(OutOfSubnets) as caught:
        acquire_lease(registry, small, _attrs(12))
    assert str(caught.value) == "no free subnet: every /24 between 10.0.1.0 and 10.0.2.0 is leased"


def test_conditional_writes(registry):
    subnet = IPNetwork("10.30.0.0/20")
    created = registry.create_lease(subnet, _attrs(10), 600)
    assert registry.create_lease(subnet, _attrs(11), 600) is None
    taken = registry.update_lease(created, _attrs(11), 600)
    assert taken.attrs.public_ip == "192.168.205.11"
    assert registry.update_lease(created, _attrs(10), 600) is None  # stale index: refused
    assert registry.delete_lease(created) is False
    assert registry.delete_lease(taken) is True
    assert registry.get_lease(subnet) is None


def test_renewal_of_unchanged_lease_is_a_silent_refresh(registry, raw):
    lease = registry.create_lease(IPNetwork("10.31.0.0/20"), _attrs(10), 600)
    index = registry.list_leases().index
    time.sleep(1.2)
    # Another process (the agent after a restart) renews from a fresh read, with the same TTL.
    other = make_registry(registry.api, endpoints=raw_endpoint(registry))
    renewed = other.update_lease(other.get_lease(lease.subnet), _attrs(10), 600)
    assert 598 < renewed.ttl <= 600 and 598 < raw.read(PREFIX + "/subnets/10.31.0.0-20").ttl <= 600
    again = registry.update_lease(renewed, _attrs(10), 600)
    assert again is not None and again.ttl > 598
    assert registry.watch_leases(index, 0.3)[0] == []  # a v2 refresh or a v3 keep-alive: no event
    # Another TTL: v2 refreshes; v3 puts the key on a new etcd lease (peers see the same attrs).
    longer = registry.update_lease(again, _attrs(10), 900)
    assert 890 < longer.ttl <= 900 and 890 < raw.read(PREFIX + "/subnets/10.31.0.0-20").ttl <= 900
    events = registry.watch_leases(index, 0.3)[0]
    assert all(event.lease.attrs == _attrs(10) for event in events)


def test_creation_index_orders_keys_and_survives_renewals_and_updates(api, registry, raw):
    """The index that decides which of two leases holds a shared identity (peer_identity.py)."""
    index = registry.list_leases().index
    first = registry.create_lease(IPNetwork("10.34.0.0/20"), _attrs(10), 600)
    second = registry.create_lease(IPNetwork("10.35.0.0/20"), _attrs(11), 600)
    assert 0 < first.created_index < second.created_index
    renewed = registry.update_lease(first, _attrs(10), 600)
    changed = registry.update_lease(renewed, _attrs(12), 600)
    assert renewed.created_index == changed.created_index == first.created_index
    listed = dict((lease.subnet, lease.created_index) for lease in registry.list_leases().leases)
    assert listed == {first.subnet: first.created_index, second.subnet: second.created_index}
    seen = []
    while len(seen) < 3:
        events, index = registry.watch_leases(index, 2)[:2]
        seen.extend(events)
    assert [event.lease.created_index for event in seen] == [first.created_index, second.created_index,
                                                             first.created_index]
    # An unconditional write (upstream flanneld's renewal): v2 re-creates the key, v3 keeps its creation.
    raw.write(PREFIX + "/subnets/10.34.0.0-20", _attrs(12).to_json(), ttl=600)
    rewritten = registry.get_lease(first.subnet).created_index
    assert rewritten > second.created_index if api == "v2" else rewritten == first.created_index


def test_renewal_of_a_lease_that_vanished_is_refused(registry, raw):
    lease = registry.create_lease(IPNetwork("10.32.0.0/20"), _attrs(10), 600)
    raw.delete(PREFIX + "/subnets/10.32.0.0-20")
    assert registry.update_lease(lease, _attrs(10), 600) is None
    assert registry.get_lease(lease.subnet) is None


def test_lease_expires_with_its_ttl(registry):
    index = registry.list_leases().index
    lease = registry.create_lease(IPNetwork("10.33.0.0/20"), _attrs(10), 2)
    assert 0 < lease.ttl <= 2 and registry.get_lease(lease.subnet) is not None
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(event.removed for event in seen):
        events, index = registry.watch_leases(index, 1)[:2]
        seen.extend(events)
    assert [event.removed for event in seen] == [False, True]
    assert registry.get_lease(lease.subnet) is None


def test_watch_reports_changes_and_moves_past_bad_keys(registry, raw):
    index = registry.list_leases().index
    raw.write(PREFIX + "/subnets/garbage", "x")
    raw.write(PREFIX + "/subnets/10.40.0.0-20", "{not json")
    lease = registry.create_lease(IPNetwork("10.41.0.0/20"), _attrs(12), 600)
    seen, skipped = [], []
    while not seen:
        events, index, bad = registry.watch_leases(index, 2)
        seen.extend(events)
        if bad:
            skipped.append(bad[0])
    assert skipped == [PREFIX + "/subnets/garbage", PREFIX + "/subnets/10.40.0.0-20"]
    # A lease key given a bad value no longer holds a usable lease: it reads as a removal.
    assert seen[0].subnet == IPNetwork("10.40.0.0/20") and seen[0].removed
    events, index = registry.watch_leases(index, 2)[:2]
    seen.extend(events)
    assert seen[1].subnet == lease.subnet and seen[1].lease.attrs == _attrs(12)
    registry.delete_lease(registry.get_lease(lease.subnet))
    events, index = registry.watch_leases(index, 2)[:2]
    assert events[0].removed and events[0].subnet == lease.subnet
    listing = registry.list_leases()
    skipped_keys = sorted(key for key, _reason in listing.skipped)
    assert skipped_keys == [PREFIX + "/subnets/10.40.0.0-20", PREFIX + "/subnets/garbage"]


def test_watch_timeout_returns_no_event(registry):
    index = registry.list_leases().index
    assert registry.watch_leases(index, 0.2) == ([], index, None)


def test_history_cleared_asks_for_resync(api, registry, raw):
    index = registry.list_leases().index
    for number in range(1010 if api == "v2" else 5):
        raw.write(PREFIX + "/churn", str(number))
    if api == "v3":
        raw.compact()  # v3 keeps history until compacted
    with pytest.raises(IndexCleared) as caught:
        registry.watch_leases(index, 1)
    if api == "v3":
        assert "compacted" in str(caught.value)


def test_watch_resumes_from_the_last_revision_after_a_disconnect(api, registry, raw, request):
    server = request.getfixturevalue("etcd_server" if api == "v2" else "etcd_v3_server")
    first = registry.create_lease(IPNetwork("10.34.0.0/20"), _attrs(10), 600)
    index = registry.list_leases().index
    assert registry.watch_leases(index, 0.2)[0] == []  # the v3 watch stream is open now
    server.process.terminate()
    server.process.wait(10)
    server.process = None
    server.start()  # same data directory: the keys and the revision history survive
    raw.write(PREFIX + "/subnets/10.35.0.0-20", _attrs(11).to_json(), ttl=600)
    registry.delete_lease(registry.get_lease(first.subnet))
    seen = []
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        try:
            events, index = registry.watch_leases(index, 1)[:2]
        except RegistryUnavailable:
            continue
        seen.extend(events)
    assert [(str(event.subnet), event.removed) for event in seen] == [("10.35.0.0/20", False), ("10.34.0.0/20", True)]


def test_missing_config_says_where_to_look(api, registry):
    with pytest.raises(ConfigMissing) as caught:
        registry.get_config()
    assert "/coreos.com/network/config" in str(caught.value) and api in str(caught.value)


def test_failover_and_unavailable(api, api_endpoint):
    dead = "http://127.0.0.1:1"
    both = make_registry(api, endpoints=[dead, api_endpoint], timeout=1)
    assert both.list_leases().leases == []
    with pytest.raises(RegistryUnavailable) as caught:
        make_registry(api, endpoints=dead, timeout=1).list_leases()
    assert "127.0.0.1:1" in str(caught.value)


def test_public_ip_claim_is_held_refreshed_and_refused_to_another_host(registry, raw):
    assert registry.claim_public_ip("192.168.205.10", "host-one", 30) is None
    assert registry.claim_public_ip("192.168.205.10", "host-one", 30) is None  # refreshed
    assert registry.claim_public_ip("192.168.205.10", "host-two", 30) == "host-one"
    raw.delete(PREFIX + "/netlab-hosts/192.168.205.10")  # gone (expired): the next host may take it
    assert registry.claim_public_ip("192.168.205.10", "host-two", 30) is None
    assert 25 < raw.read(PREFIX + "/netlab-hosts/192.168.205.10").ttl <= 30


def test_public_ip_claim_someone_wrote_junk_into_is_refused_naming_it(registry, raw):
    raw.write(PREFIX + "/netlab-hosts/192.168.205.10", "{not json", ttl=30)
    holder = registry.claim_public_ip("192.168.205.10", "host-one", 30)
    assert holder == "unknown (unreadable claim at %s/netlab-hosts/192.168.205.10)" % PREFIX
    assert raw.read(PREFIX + "/netlab-hosts/192.168.205.10").value == "{not json"


def test_concurrent_acquisition_never_shares_a_subnet(api, api_endpoint):
    import threading

    results, errors = [], []

    def one(number):
        # Every thread draws the same random numbers, so they collide as often as they can. Ten
        # collisions in a row end one call with "Max retries reached" (flanneld's limit; at load 5
        # on 2 cores a thread lost ten rounds once); the agent then calls again after a backoff,
        # and so does this thread, a few times.
        registry = make_registry(api, endpoints=api_endpoint)
        for call in range(5):
            try:
                results.append(acquire_lease(registry, CONFIG, _attrs(number), rng=random.Random(1)))
                return
            except LeaseError as err:
                if call == 4:
                    errors.append(err)
                time.sleep(0.05 * (call + 1))
            except Exception as err:  # collected and asserted below
                errors.append(err)
                return

    threads = [threading.Thread(target=one, args=(n,)) for n in range(10, 40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(lease.subnet for lease in results)) == 30


def test_watch_with_config_reports_config_changes_in_order_and_sleeps_through_claims(registry, raw):
    registry.put_config('{"Network": "10.0.0.0/8"}')
    assert registry.claim_public_ip("192.168.205.10", "host-a", 60) is None
    index = registry.list_leases().index
    assert registry.claim_public_ip("192.168.205.10", "host-a", 60) is None  # a refresh: no event
    assert registry.watch_leases(index, 0.3, with_config=True) == ([], index, None)
    registry.put_config('{"Network": "10.0.0.0/16"}')
    lease = registry.create_lease(IPNetwork("10.0.16.0/20"), _attrs(10), 600)
    raw.delete(PREFIX + "/config")
    seen = []
    while len(seen) < 3:
        events, index = registry.watch_leases(index, 2, with_config=True)[:2]
        seen.extend(events)
    assert seen[0].text == '{"Network": "10.0.0.0/16"}'
    assert seen[1].subnet == lease.subnet and seen[1].lease.attrs == _attrs(10)
    assert seen[2].text is None  # the key went away
    # Without with_config the config is not watched.
    registry.put_config('{"Network": "10.0.0.0/8"}')
    assert registry.watch_leases(index, 0.3)[0] == []


def test_v3_credentials_work_whether_etcd_auth_is_off_or_turned_on_later():
    """Off, etcd refuses the login ("authentication is not enabled") and serves without a token, as
    etcd's own client assumes; turned on later, the registry logs in at its next request; a wrong
    password is an auth error naming the flags to check."""
    from support.etcdserver import EtcdServer, v3_call

    server = EtcdServer(enable_v2=False).start()  # its own: auth stays on once enabled
    try:
        registry = make_registry("v3", endpoints=server.endpoint, username="root", password="Pw-root-1")
        registry.put_config('{"Network": "10.0.0.0/8"}')
        for path, body in (("/v3/auth/user/add", {"name": "root", "password": "Pw-root-1"}),
                           ("/v3/auth/role/add", {"name": "root"}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/enable", {})):
            v3_call(server.endpoint, path, body)
        assert registry.get_config() == '{"Network": "10.0.0.0/8"}'
        anonymous = make_registry("v3", endpoints=server.endpoint)
        wrong = make_registry("v3", endpoints=server.endpoint, username="root", password="not-it")
        for refused in (anonymous, wrong):
            with pytest.raises(RegistryAuthError) as caught:
                refused.get_config()
            assert "-etcd-username" in str(caught.value), caught.value
    finally:
        server.stop()
