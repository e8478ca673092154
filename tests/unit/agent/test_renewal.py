"""Renewal timing: etcd's remaining TTL minus the margin, never a wall-clock comparison."""

from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import parse_args
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.daemon import Agent
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs


def _keeper(margin_minutes, now=1000.0):
    """The lease keeper of an agent started with -subnet-lease-renew-margin=`margin_minutes`."""
    return Agent(parse_args(["-subnet-lease-renew-margin=%d" % margin_minutes], environ={}), registry=None,
                 clock=lambda: now).keeper


def _lease(ttl):
    return Lease(IPNetwork("10.10.0.0/20"), LeaseAttrs("192.168.205.10", "vxlan", "0e:00:00:00:00:01"), ttl=ttl)


def test_renews_margin_before_expiry():
    keeper = _keeper(60)
    keeper.lease = _lease(86400)
    keeper.schedule()
    assert keeper.renew_at == 1000.0 + 86400 - 3600


def test_short_ttl_renews_at_half_life():
    keeper = _keeper(60)
    keeper.lease = _lease(120)
    keeper.schedule()
    assert keeper.renew_at == 1000.0 + 60


def test_reservation_is_never_renewed():
    keeper = _keeper(60)
    keeper.lease = _lease(None)
    keeper.schedule()
    assert keeper.renew_at is None
