"""Fixtures: a PKI made with openssl and a TLS etcd on loopback (see tlsetcd.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tlsetcd import Pki, TlsEtcdServer  # noqa: E402  (needs the path above)


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
