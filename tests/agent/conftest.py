"""Fixtures for tests on real kernel objects inside throw-away network namespaces."""

import os

import pytest

from support.cluster import Cluster, build_agent, upstream_absent_reason
from support.netns import Lab


@pytest.fixture
def lab():
    """An empty Lab (LAN bridge namespace); every namespace it made is deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespace tests need root")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture
def three_hosts(lab):
    """Three hosts on one LAN: 172.31.250.11, .12, .13 on eth0 (MTU 1500)."""
    return [lab.add_host() for _number in range(3)]


@pytest.fixture(scope="session")
def agent_path(tmp_path_factory):
    """The agent zipapp, built once from this checkout."""
    return build_agent(str(tmp_path_factory.mktemp("agent")))


@pytest.fixture
def etcd_api():
    """The etcd API of `cluster`: v2; a test parametrized on etcd_api also runs on v3 (v2 off)."""
    return "v2"


@pytest.fixture
def cluster(lab, agent_path, etcd_api, request):
    """etcd in the lab's LAN namespace with the tutorial's network config; agents started on demand."""
    with Cluster(lab, agent_path, name=request.node.name, api=etcd_api) as running:
        yield running


@pytest.fixture
def upstream():
    """Skips the test, saying where the binary was looked for, when upstream flanneld is absent."""
    reason = upstream_absent_reason()
    if reason:
        pytest.skip(reason)


def pytest_collection_modifyitems(items):
    """Cases marked long_wait first: make test runs this directory on parallel workers, and a case
    that idles for minutes collected last would leave its worker running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long_wait") is None)
