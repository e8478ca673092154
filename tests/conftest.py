"""Test-wide fixtures: a real etcd. pytest.ini's pythonpath imports the checkout as the collection
netlab.flannel (.collections/ansible_collections/netlab/flannel links back to it) and the shared
helpers as `support.*` (tests/support/)."""

import pytest

from support.etcdserver import EtcdServer


@pytest.fixture(scope="session")
def etcd_server():
    server = EtcdServer().start()
    yield server
    server.stop()


@pytest.fixture
def etcd_endpoint(etcd_server):
    """A clean keyspace on the shared test etcd."""
    etcd_server.wipe()
    yield etcd_server.endpoint
    etcd_server.wipe()


@pytest.fixture(scope="session")
def etcd_v3_server():
    """A second shared test etcd, with the v2 API off: what the v3 registry must work with."""
    server = EtcdServer(enable_v2=False).start()
    yield server
    server.stop()
