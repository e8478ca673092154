"""The v2 registry's watch on a kept-alive connection of its own (registry/v2_watch.py), against
a real etcd: one connection while changes keep coming, a connection etcd closed meanwhile is
replaced without an error, a quiet watch on another cluster behind the same URL is an error, one on
the same cluster emptied asks for a re-listing, and a reply is read within the same limits as
python-etcd's."""

import shutil

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import make_registry
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry.errors import IndexCleared, RegistryError
from support.etcdserver import EtcdServer


def _attrs(last_octet):
    return LeaseAttrs("192.168.205.%d" % last_octet, "vxlan", "0e:00:00:00:01:%02x" % last_octet)


def _local_port(registry):
    """The local port of the watch's connection now (None when it has none)."""
    connection = registry._watches[0]._connection
    return connection.sock.getsockname()[1] if connection is not None and connection.sock is not None else None


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


def test_a_quiet_watch_on_a_new_cluster_behind_the_same_url_is_an_error():
    """etcd re-formed on the same URL (an emptied data directory, another token: what the etcd role
    does when the membership changes): its index is below the agent's, so every watch stays quiet.
    The watch's headers name the new cluster: an error once (the agent then re-lists, finds its
    index gone back and its lease gone), then, the old index being above the new cluster's, a
    request to re-list (IndexCleared) rather than a quiet watch."""
    server = EtcdServer().start()
    try:
        registry = make_registry("v2", endpoints=server.endpoint)
        for number in range(5):
            registry.create_lease(IPNetwork("10.%d.0.0/20" % (60 + number)), _attrs(number + 20), 600)
        index = registry.list_leases().index
        server.process.terminate()
        server.process.wait(10)
        shutil.rmtree(server.data_dir)
        server.token = "another-cluster"
        server.start()
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
        registry = make_registry("v2", endpoints=server.endpoint)
        for number in range(5):
            registry.create_lease(IPNetwork("10.%d.0.0/20" % (60 + number)), _attrs(number + 20), 600)
        index = registry.list_leases().index
        server.process.terminate()
        server.process.wait(10)
        shutil.rmtree(server.data_dir)
        server.start()
        for _attempt in range(2):
            with pytest.raises(IndexCleared, match="is at index [0-9]+, below %d" % index):
                registry.watch_leases(index, 2)
        listing = registry.list_leases()
        assert listing.leases == [] and listing.index < index
        assert registry.watch_leases(listing.index, 1)[:2] == ([], listing.index)
        registry.close()
    finally:
        server.stop()
