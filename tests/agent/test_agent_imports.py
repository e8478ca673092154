"""What the agent imports, seen from outside the running zipapp: python-etcd only on etcd v2, and
the narrower import path (flannel.slim): with http:// endpoints OpenSSL is never mapped into the
agent; NETLAB_AGENT_SLIM=none brings the plain imports back (so this test can tell the
difference). Over https the agent works: tests/etcd/test_tls.py."""

import os

import pytest

from support.cluster import Cluster

# No overlay traffic, no loss counted: make test runs this file before Molecule ends (agent-control).
pytestmark = pytest.mark.control_plane

OPENSSL_LIBRARIES = ("libcrypto.so", "libssl.so")


def _mapped_libraries(pid):
    with open("/proc/%d/maps" % pid) as handle:
        return set(os.path.basename(line.split()[-1]) for line in handle if ".so" in line)


@pytest.mark.parametrize("steps, openssl_mapped", [(None, False), ("none", True)])
def test_openssl_is_mapped_only_without_the_slim_path(lab, agent_path, monkeypatch, steps, openssl_mapped):
    if steps is not None:
        monkeypatch.setenv("NETLAB_AGENT_SLIM", steps)
    with Cluster(lab, agent_path) as cluster:
        agent = cluster.agent(lab.add_host())
        agent.wait_ready()
        libraries = _mapped_libraries(agent.process.pid)
    assert any(name.startswith(OPENSSL_LIBRARIES) for name in libraries) is openssl_mapped, sorted(libraries)


@pytest.mark.parametrize("etcd_api, loaded", [("v3", False), ("v2", True)])
def test_python_etcd_is_imported_only_by_an_agent_on_v2(lab, agent_path, monkeypatch, etcd_api, loaded):
    """python-etcd speaks v2 only: an agent on -etcd-api=v3 never imports it (the registry package
    loads the one API asked for). Python logs every module's first import to the agent's log."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    with Cluster(lab, agent_path, api=etcd_api) as cluster:
        agent = cluster.agent(lab.add_host())
        agent.wait_ready()  # registry made, leases listed, backend up
        log = agent.log
    imported = set(line.rsplit("|", 1)[-1].strip() for line in log.splitlines() if line.startswith("import time:"))
    assert "flannel.registry.base" in imported, log[-2000:]
    # python-etcd's modules (the package's own line is not always printed from a zipapp)
    python_etcd = sorted(name for name in imported if name == "etcd" or name.startswith("etcd."))
    assert bool(python_etcd) is loaded, python_etcd
