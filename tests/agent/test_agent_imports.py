"""The agent's narrower import path (flannel.slim), seen from outside the running zipapp: with
http:// endpoints OpenSSL is never mapped into the agent; NETLAB_AGENT_SLIM=none brings the plain
imports back (so this test can tell the difference). Over https the agent works: tests/etcd/test_tls.py."""

import os

import pytest

from cluster import Cluster

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
