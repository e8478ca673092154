"""Test-wide setup: import the checkout as the collection netlab.flannel, and a real etcd."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# .collections/ansible_collections/netlab/flannel links back to the checkout.
sys.path.insert(0, os.path.join(ROOT, ".collections"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from etcdserver import EtcdServer  # noqa: E402  (needs the path above)


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
