"""Fixtures: registry and raw clients on the test etcd; a PKI made with openssl and a TLS etcd on
loopback (see tlsetcd.py)."""

import os
import sys

import etcd
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tlsetcd import Pki, TlsEtcdServer  # noqa: E402  (needs the path above)

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import EtcdRegistry  # noqa: E402


@pytest.fixture
def registry(etcd_endpoint):
    """The project's registry on the shared test etcd (clean keyspace)."""
    return EtcdRegistry(etcd_endpoint)


@pytest.fixture
def raw(etcd_endpoint):
    """A plain python-etcd client on the same etcd, for writing what the registry never would."""
    host, port = etcd_endpoint.rsplit("/", 1)[1].split(":")
    return etcd.Client(host=host, port=int(port))


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def tls_etcd_server(pki):
    server = TlsEtcdServer(pki).start()
    yield server
    server.stop()


@pytest.fixture
def tls_etcd(tls_etcd_server):
    """The shared TLS etcd with a clean keyspace."""
    tls_etcd_server.wipe()
    yield tls_etcd_server
    tls_etcd_server.wipe()
