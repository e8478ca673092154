"""The v3 registry's watch against an etcd re-formed behind the same URL: etcd answers a watch from
a revision it has not reached with silence until it reaches it, so the watch must see from the
stream's headers that its revisions mean nothing there (registry/v3_watch.py)."""

import shutil

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import IndexCleared, make_registry
from support.etcdserver import EtcdServer


def _attrs(last_octet):
    return LeaseAttrs("192.168.205.%d" % last_octet, "vxlan", "0e:00:00:00:00:%02x" % last_octet)


@pytest.mark.parametrize("token, reason", [
    # What the etcd role does when the membership changes: an emptied data directory, another token.
    ("another-cluster", "is another cluster now"),
    # An emptied data directory with the same token and peer URL: the same cluster ID, revision 1.
    ("etcd-cluster", "is at revision 1, below"),
])
def test_a_watch_on_etcd_re_formed_behind_the_same_url_asks_for_a_re_listing(token, reason):
    """The open stream breaks with the old etcd; the one opened again on the new etcd says in its
    first header that it is another cluster, or below the revision the watch resumes from: the
    watch asks for a re-listing (IndexCleared) until there is one, then waits on the new etcd."""
    server = EtcdServer(enable_v2=False).start()
    try:
        registry = make_registry("v3", endpoints=server.endpoint)
        for number in range(5):
            registry.create_lease(IPNetwork("10.%d.0.0/20" % (60 + number)), _attrs(number + 20), 600)
        index = registry.list_leases().index
        assert registry.watch_leases(index, 0.2)[:2] == ([], index)  # the stream is open
        server.process.terminate()
        server.process.wait(10)
        shutil.rmtree(server.data_dir)
        server.token = token
        server.start()
        for _attempt in range(2):  # not once only: the revisions stay the old etcd's until a listing
            with pytest.raises(IndexCleared, match=reason):
                registry.watch_leases(index, 2)
        listing = registry.list_leases()
        assert listing.leases == [] and listing.index < index
        assert registry.watch_leases(listing.index, 0.5)[:2] == ([], listing.index)
        registry.create_lease(IPNetwork("10.70.0.0/20"), _attrs(30), 600)
        events = registry.watch_leases(listing.index, 2)[0]
        registry.close()
        assert [str(event.subnet) for event in events] == ["10.70.0.0/20"]
    finally:
        server.stop()
