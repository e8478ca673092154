"""flannel.slim's decisions (pure logic); its effect on the running agent is tested in
tests/agent/test_agent_imports.py and measured by tests/bench/bench_memory.py."""

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import slim


@pytest.mark.parametrize("argv, environ, wanted", [
    (["-etcd-endpoints=http://10.0.0.1:2379"], {}, False),
    ([], {}, False),
    (["-etcd-endpoints=HTTPS://10.0.0.1:2379"], {}, True),
    (["--etcd-endpoints", "http://a:2379,https://b:2379"], {}, True),
    ([], {"FLANNELD_ETCD_ENDPOINTS": "https://10.0.0.1:2379"}, True),
])
def test_tls_is_kept_for_any_https_endpoint(argv, environ, wanted):
    assert slim.tls_wanted(argv, environ) is wanted


def test_steps_come_from_the_variable(monkeypatch):
    # Only steps that change nothing in this (test) process once its libraries are imported.
    import dns.resolver  # noqa: F401
    import pyroute2  # noqa: F401

    assert slim.apply([], {"NETLAB_AGENT_SLIM": "none"}) == []
    assert slim.apply([], {"NETLAB_AGENT_SLIM": "dns,pyroute2,unknown"}) == ["pyroute2", "dns"]
