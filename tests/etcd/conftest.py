"""Fixtures: registry and raw clients on the test etcd, for each etcd API (v2, and v3 on an etcd
with v2 off); a PKI made with openssl and a TLS etcd on loopback (see tlsetcd.py)."""

import etcd
import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import make_registry
from support.etcdserver import RawV3Client
from support.tlsetcd import Pki, TlsEtcdServer


@pytest.fixture(params=["v2", "v3"])
def api(request):
    """The etcd API under test: every test that uses it runs once per API."""
    return request.param


@pytest.fixture
def api_endpoint(api, request):
    """A clean keyspace on the shared test etcd of that API (v3: an etcd with v2 off)."""
    server = request.getfixturevalue("etcd_server" if api == "v2" else "etcd_v3_server")
    server.wipe()
    yield server.endpoint
    server.wipe()


@pytest.fixture
def registry(api, api_endpoint):
    """The project's registry on the shared test etcd (clean keyspace)."""
    made = make_registry(api, endpoints=api_endpoint)
    yield made
    made.close()


@pytest.fixture
def raw(api, api_endpoint):
    """A plain client on the same etcd (python-etcd for v2, the gateway for v3), for writing what
    the registry never would."""
    if api == "v3":
        return RawV3Client(api_endpoint)
    host, port = api_endpoint.rsplit("/", 1)[1].split(":")
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


@pytest.fixture(scope="module")
def tls_etcd_v3(pki):
    """An etcd on https with client-certificate auth and the v2 API off."""
    server = TlsEtcdServer(pki, enable_v2=False).start()
    yield server
    server.stop()
