"""The v2 registry's watch on a kept-alive connection of its own (registry/v2_watch.py), against a
real etcd: one connection while changes keep coming, one streaming request while they come live, a
stream etcd answered from its history not waited on again, a connection etcd closed meanwhile is
replaced without an error, a quiet watch on another cluster behind the same URL is an error, one on
the same cluster emptied asks for a re-listing, and a reply is read within the same limits as
python-etcd's."""

import shutil

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import make_registry
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry.errors import IndexCleared, RegistryError
from support.etcdserver import EtcdServer, LiveWriter, etcd_metric


def _attrs(last_octet):
    return LeaseAttrs("192.168.205.%d" % last_octet, "vxlan", "0e:00:00:00:01:%02x" % last_octet)


def _local_port(registry):
    """The local port of the watch's connection now (None when it has none)."""
    connection = registry._watches[0]._connection
    return connection.sock.getsockname()[1] if connection is not None and connection.sock is not None else None


def test_changes_that_come_live_arrive_on_one_streaming_request(etcd_endpoint):
    """etcd counts the watch requests it gets: five live changes, two requests (the first one's
    reply tells the watch etcd's index; from then on one stream carries every change)."""
    watcher = make_registry("v2", endpoints=etcd_endpoint)
    writer = LiveWriter(make_registry("v2", endpoints=etcd_endpoint), etcd_endpoint, _attrs)
    index = watcher.list_leases().index
    requests_before = etcd_metric(etcd_endpoint, "etcd_debugging_store_watch_requests_total")
    seen, subnets = [], [IPNetwork("10.%d.0.0/20" % number) for number in range(70, 75)]
    for number, subnet in enumerate(subnets):
        events, index = writer.watch(watcher, index, number + 30, subnet)
        seen.extend(event.subnet for event in events)
    requests = etcd_metric(etcd_endpoint, "etcd_debugging_store_watch_requests_total") - requests_before
    watcher.close()
    assert seen == subnets
    assert index == writer.leases[-1].modified_index
    assert requests == 2, requests


def test_a_stream_answered_from_history_is_not_waited_on_again(etcd_endpoint):
    """Changes made while nobody watched: etcd answers the next (streaming) request from its
    history with that one event and sends nothing more on it. The watch asks again for the next
    change, and the live ones after it still arrive, in order."""
    watcher = make_registry("v2", endpoints=etcd_endpoint)
    writer = LiveWriter(make_registry("v2", endpoints=etcd_endpoint), etcd_endpoint, _attrs)
    index = watcher.list_leases().index
    first, index = writer.watch(watcher, index, 40, IPNetwork("10.80.0.0/20"))
    unwatched = [IPNetwork("10.81.0.0/20"), IPNetwork("10.82.0.0/20")]
    for number, subnet in enumerate(unwatched):
        writer.registry.create_lease(subnet, _attrs(number + 41), 600)
    seen = [event.subnet for event in first]
    for _subnet in unwatched:
        events, index = watcher.watch_leases(index, 5)[:2]  # each at once: in etcd's history
        seen.extend(event.subnet for event in events)
    for number, subnet in enumerate([IPNetwork("10.83.0.0/20"), IPNetwork("10.84.0.0/20")]):
        events, index = writer.watch(watcher, index, number + 43, subnet)
        seen.extend(event.subnet for event in events)
    watcher.close()
    assert seen == [IPNetwork("10.%d.0.0/20" % number) for number in range(80, 85)]


def test_changes_are_read_on_one_kept_alive_connection(etcd_endpoint):
    registry = make_registry("v2", endpoints=etcd_endpoint)
    index = registry.list_leases().index
    subnets = [IPNetwork("10.%d.0.0/20" % number) for number in (50, 51, 52)]
    for number, subnet in enumerate(subnets):
        registry.create_lease(subnet, _attrs(number + 1), 600)
    seen, ports = [], set()
    for _subnet in subnets:
        events, index = registry.watch_leases(index, 2)[:2]
        seen.extend(event.subnet for event in events)
        ports.add(_local_port(registry))
    registry.close()
    assert seen == subnets
    assert len(ports) == 1 and None not in ports, ports


def test_a_connection_etcd_closed_is_replaced_without_an_error(etcd_server, etcd_endpoint):
    registry = make_registry("v2", endpoints=etcd_endpoint)
    index = registry.list_leases().index
    registry.create_lease(IPNetwork("10.53.0.0/20"), _attrs(10), 600)
    events, index = registry.watch_leases(index, 2)[:2]
    assert len(events) == 1 and _local_port(registry) is not None
    etcd_server.process.terminate()  # closes the kept-alive connection
    etcd_server.process.wait(10)
    etcd_server.process = None
    etcd_server.start()  # same data directory: the keys and the index survive
    created = registry.create_lease(IPNetwork("10.54.0.0/20"), _attrs(11), 600)
    events = registry.watch_leases(index, 2)[0]  # no RegistryUnavailable: sent again on a new connection
    registry.close()
    assert [(event.subnet, event.lease.attrs) for event in events] == [(created.subnet, created.attrs)]


def test_a_stream_etcd_closed_is_replaced_without_an_error(etcd_server, etcd_endpoint):
    """etcd restarted between two changes while a stream was open: its connection ends between
    events, and the watch asks again on a new connection (no error, nothing lost)."""
    watcher = make_registry("v2", endpoints=etcd_endpoint)
    writer = LiveWriter(make_registry("v2", endpoints=etcd_endpoint), etcd_endpoint, _attrs)
    index = watcher.list_leases().index
    for number in range(2):  # the second through a stream, which stays open
        index = writer.watch(watcher, index, number + 60, IPNetwork("10.%d.0.0/20" % (100 + number)))[1]
    assert watcher._watches[0]._stream is not None
    etcd_server.process.terminate()  # closes the stream's connection
    etcd_server.process.wait(10)
    etcd_server.process = None
    etcd_server.start()  # same data directory: the keys and the index survive
    created = writer.registry.create_lease(IPNetwork("10.102.0.0/20"), _attrs(62), 600)
    events = watcher.watch_leases(index, 2)[0]  # no RegistryBadReply: asked again on a new connection
    watcher.close()
    assert [(event.subnet, event.lease.attrs) for event in events] == [(created.subnet, created.attrs)]


def _five_leases_then_etcd_emptied(server, token=None):
    """A v2 registry on `server` after five leases (and the index it listed them at), then `server`
    restarted behind the same URL with its data directory emptied (and `token`, a new cluster's)."""
    registry = make_registry("v2", endpoints=server.endpoint)
    for number in range(5):
        registry.create_lease(IPNetwork("10.%d.0.0/20" % (60 + number)), _attrs(number + 20), 600)
    index = registry.list_leases().index
    server.process.terminate()
    server.process.wait(10)
    shutil.rmtree(server.data_dir)
    if token is not None:
        server.token = token
    server.start()
    return registry, index


def test_a_quiet_watch_on_a_new_cluster_behind_the_same_url_is_an_error():
    """etcd re-formed on the same URL (an emptied data directory, another token: what the etcd role
    does when the membership changes): its index is below the agent's, so every watch stays quiet.
    The watch's headers name the new cluster: an error once (the agent then re-lists, finds its
    index gone back and its lease gone), then, the old index being above the new cluster's, a
    request to re-list (IndexCleared) rather than a quiet watch."""
    server = EtcdServer().start()
    try:
        registry, index = _five_leases_then_etcd_emptied(server, token="another-cluster")
        with pytest.raises(RegistryError) as caught:
            registry.watch_leases(index, 2)
        assert "UUID of the cluster changed" in str(caught.value), caught.value
        with pytest.raises(IndexCleared):  # the new cluster's index is below: re-list, not wait
            registry.watch_leases(index, 1)
        listing = registry.list_leases()
        registry.close()
        assert listing.leases == [] and listing.index < index
    finally:
        server.stop()


def test_a_quiet_watch_on_an_emptied_etcd_with_the_same_cluster_id_asks_for_a_re_listing():
    """etcd re-formed on the same URL with the same token (its data directory emptied, or restored
    from an older snapshot): the same cluster ID, an index below the agent's, so every watch stays
    quiet. The watch's X-Etcd-Index says so: a re-listing (IndexCleared) until there is one."""
    server = EtcdServer().start()
    try:
        registry, index = _five_leases_then_etcd_emptied(server)
        for _attempt in range(2):
            with pytest.raises(IndexCleared, match="is at index [0-9]+, below %d" % index):
                registry.watch_leases(index, 2)
        listing = registry.list_leases()
        assert listing.leases == [] and listing.index < index
        assert registry.watch_leases(listing.index, 1)[:2] == ([], listing.index)
        registry.close()
    finally:
        server.stop()


def test_a_stream_that_falls_behind_is_let_go_before_etcd_drops_it(etcd_endpoint):
    """etcd drops a stream's watcher without a word when 100 events queue behind a connection whose
    buffers are full: its reply goes quiet. Here large values under the prefix (not leases, passed
    over) fill the buffers while the watch reads nothing, then 150 leases are created: the watch
    lets the stream go when it finds itself behind, and every change arrives once, in order,
    each at once (without the guard, the rest came only after a quiet watch)."""
    watcher = make_registry("v2", endpoints=etcd_endpoint)
    writer = LiveWriter(make_registry("v2", endpoints=etcd_endpoint), etcd_endpoint, _attrs)
    index = watcher.list_leases().index
    for number in range(2):  # the second through a stream
        index = writer.watch(watcher, index, number + 50, IPNetwork("10.%d.0.0/20" % (90 + number)), True)[1]
    raw = writer.registry._clients[0]
    for number in range(24):
        raw.write("/coreos.com/network/bulk/%d" % number, "x" * 500000)
    subnets = [IPNetwork("10.92.%d.0/24" % number) for number in range(150)]
    for number, subnet in enumerate(subnets):
        writer.registry.create_lease(subnet, _attrs(number % 250 + 1), 600)
    seen = []
    while len(seen) < len(subnets):
        events, next_index = watcher.watch_leases(index, 5, with_config=True)[:2]
        assert next_index > index, "no change within 5 s after %d of %d" % (len(seen), len(subnets))
        seen.extend(event.subnet for event in events)
        index = next_index
    watcher.close()
    assert seen == subnets
