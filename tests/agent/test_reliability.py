"""Faults the overlay must survive (issue: reliability). Figures go to build/reliability-figures.txt.

NETLAB_OUTAGE_SECONDS (default 10; the same knob sizes the Molecule scenario's etcd outage) and
NETLAB_MANY_AGENTS (default 30) size the two long cases; `make test-reliability` runs them at 60 s
and 100 agents.
"""

import os
import signal
import time

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import make_registry
from support.cluster import ROOT, Cluster, wait_for
from support.netns import Pinger

OUTAGE = int(os.environ.get("NETLAB_OUTAGE_SECONDS", "10"))
MANY_AGENTS = int(os.environ.get("NETLAB_MANY_AGENTS", "30"))
FIGURES = os.path.join(ROOT, "build", "reliability-figures.txt")
# The cases that also run against etcd's v3 API (etcd with v2 off, agents with -etcd-api=v3).
BOTH_APIS = pytest.mark.parametrize("etcd_api", ["v2", "v3"])


def record(case, text):
    os.makedirs(os.path.dirname(FIGURES), exist_ok=True)
    with open(FIGURES, "a") as handle:
        handle.write("%s %s: %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), case, text))


def acquisition_attempts(host):
    """How many times an agent started with -metrics=true has tried to take a lease: each try
    claims its public IP first (one claim_public_ip request), and nothing else claims before it
    holds a lease. Its log says a failing reason once, not at every try."""
    from test_agent_metrics import scrape

    samples = scrape(host)
    return int(samples.get(("flannel_etcd_requests_total", (("operation", "claim_public_ip"),)), 0))


def error_lines(log, text):
    """The agent's ERROR lines holding `text`."""
    return sum(1 for line in log.splitlines() if " ERROR " in line and text in line)


def _two_hosts_with_containers(lab, cluster):
    hosts = [lab.add_host(), lab.add_host()]
    agents = [cluster.agent(host) for host in hosts]
    subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
    for agent, other in ((agents[0], subnets[1]), (agents[1], subnets[0])):
        wait_for(lambda: str(other) in agent.routes(), what="route to %s" % other)
    containers = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
    return hosts, agents, subnets, containers


@BOTH_APIS
def test_etcd_outage_loses_no_ping_and_health_returns(lab, cluster):
    hosts, agents, subnets, containers = _two_hosts_with_containers(lab, cluster)
    routes_before = [agent.routes() for agent in agents]
    pinger = Pinger(containers[0].ns, containers[1].address, count=int((OUTAGE + 8) / 0.1), interval=0.1,
                    answered_first=True)
    time.sleep(2)
    cluster.stop_etcd()
    for agent in agents:
        wait_for(lambda: agent.healthz()[0] == 503, 10, what="%s unhealthy without etcd" % agent.host.name)
    time.sleep(max(0, OUTAGE - 2))
    cluster.start_etcd()
    returned = time.monotonic()
    for agent in agents:
        wait_for(lambda: agent.healthz()[0] == 200, 5, what="%s healthy within 5 s of etcd's return" % agent.host.name)
    recovered = time.monotonic() - returned
    sent, replies = pinger.result()
    record("etcd outage %d s (etcd %s)" % (OUTAGE, cluster.api), "%d/%d pings answered; both agents healthy %.2f s after etcd returned"
           % (replies, sent, recovered))
    assert replies == sent, "echoes %s (0.1 s apart, numbered from 0) had no reply" % pinger.lost
    assert [IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr for agent in agents] == subnets
    assert [agent.routes() for agent in agents] == routes_before
    for agent in agents:
        assert "removed route" not in agent.log and "removed stale" not in agent.log


def test_agent_sigkill_and_restart_loses_no_ping(lab, cluster):
    """The data plane is the kernel's: a killed agent leaves it as it was and the new one finds it
    right, changing nothing. Echoes 0.3 s apart count when answered within 3 s, so that a loaded
    machine's slow reply is not taken for a loss; a dropped one never comes."""
    hosts, agents, subnets, containers = _two_hosts_with_containers(lab, cluster)
    before = agents[0].state()
    pinger = Pinger(containers[0].ns, containers[1].address, count=20, interval=0.3, timeout=3.0,
                    answered_first=True)
    time.sleep(1)
    agents[0].stop(signal.SIGKILL)
    restarted = cluster.agent(hosts[0])
    started = time.monotonic()
    wait_for(lambda: restarted.healthz()[0] == 200, 15, what="restarted agent healthy")
    took = time.monotonic() - started
    sent, replies = pinger.result()
    record("agent SIGKILL + restart", "%d/%d pings answered; healthy again after %.2f s; same subnet and MAC"
           % (replies, sent, took))
    assert replies == sent, "echoes %s (0.3 s apart, numbered from 0; the kill came at about 3) had no reply" % pinger.lost
    assert IPNetwork(restarted.env()["FLANNEL_SUBNET"]).cidr == subnets[0]
    assert restarted.state() == before
    assert "backend: " not in restarted.log and "programmed: " not in restarted.log, restarted.log


def _time_until_unrouted(agent, subnet, limit):
    started = time.monotonic()
    wait_for(lambda: str(subnet) not in agent.routes(), limit, interval=0.01, what="route to %s removed" % subnet)
    return time.monotonic() - started


@BOTH_APIS
def test_agents_failing_over_to_a_re_formed_etcd_take_their_leases_there(lab, agent_path, etcd_api, request):
    """What the etcd role's new cluster can look like to running agents (given every member's
    URL): the member they watch is gone (killed: no last word on the watch), and the next URL
    answers as another, empty cluster. Their watch fails over to it without an error; that
    cluster's index is below theirs, so the watch would wait for ever. The headers of its first
    answer say so: the agents re-list and take their subnets again there; the data plane is left
    as it was (the same routes) and carries pings."""
    with Cluster(lab, agent_path, name=request.node.name, api=etcd_api) as cluster:
        other = "http://%s.1:2479" % lab.lan_prefix  # the second member's URL, not answering yet
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host, "-etcd-endpoints=%s,%s" % (cluster.endpoint, other)) for host in hosts]
        subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
        for agent, subnet in ((agents[0], subnets[1]), (agents[1], subnets[0])):
            wait_for(lambda: str(subnet) in agent.routes(), what="route to %s" % subnet)
        containers = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
        routes_before = [agent.routes() for agent in agents]
        re_formed = cluster.start_etcd(port=2479)
        try:
            cluster.etcd.kill()
            cluster.etcd.wait(10)
            registry = make_registry(etcd_api, endpoints=other)
            registry.put_config(cluster.config)  # what site.yml's network_config play does next
            for host, subnet in zip(hosts, subnets):
                wait_for(lambda: registry.get_lease(subnet) is not None, 30,
                         what="%s's lease %s taken again in the new etcd" % (host.name, subnet))
                assert registry.get_lease(subnet).attrs.public_ip == host.address
            registry.close()
            for agent in agents:
                wait_for(lambda: agent.healthz()[0] == 200, 10, what="%s healthy on the new etcd" % agent.host.name)
            assert [agent.routes() for agent in agents] == routes_before
            assert Pinger(containers[0].ns, containers[1].address, count=5, interval=0.2).result() == (5, 5)
        finally:
            re_formed.terminate()
            re_formed.wait(10)


def test_lease_deleted_by_hand_peers_unroute_within_a_second(lab, cluster):
    hosts, agents, subnets, containers = _two_hosts_with_containers(lab, cluster)
    agents[0].freeze()  # keep the owner from re-acquiring before the peer is checked
    cluster.registry.delete_lease(cluster.registry.get_lease(subnets[0]))
    took = _time_until_unrouted(agents[1], subnets[0], 1.0)
    agents[0].process.send_signal(signal.SIGCONT)
    wait_for(lambda: cluster.registry.get_lease(subnets[0]), 10, what="owner re-acquiring the same subnet")
    wait_for(lambda: str(subnets[0]) in agents[1].routes(), 5, what="peer routing it again")
    record("lease deleted by hand", "peer removed the route after %.3f s; owner re-acquired %s" % (took, subnets[0]))


@BOTH_APIS
def test_lease_expired_peers_unroute_and_owner_reacquires(lab, cluster):
    hosts, agents, subnets, containers = _two_hosts_with_containers(lab, cluster)
    agents[0].freeze()
    lease = cluster.registry.get_lease(subnets[0])
    cluster.registry.update_lease(lease, lease.attrs, 2)  # a 2 s TTL the frozen owner cannot renew
    index = cluster.registry.list_leases().index
    expired_at = None
    deadline = time.monotonic() + 10
    while expired_at is None and time.monotonic() < deadline:
        events, index = cluster.registry.watch_leases(index, 1)[:2]
        if any(event.removed and event.subnet == subnets[0] for event in events):
            expired_at = time.monotonic()
    assert expired_at is not None, "etcd never expired the lease"
    took = (time.monotonic() - expired_at) + _time_until_unrouted(agents[1], subnets[0], 1.0)
    agents[0].process.send_signal(signal.SIGCONT)
    wait_for(lambda: cluster.registry.get_lease(subnets[0]), 10, what="owner re-acquiring after expiry")
    assert cluster.registry.get_lease(subnets[0]).attrs.public_ip == hosts[0].address
    record("lease expired (2 s TTL, etcd %s)" % cluster.api, "peer removed the route %.3f s after etcd's expire event; owner re-acquired %s"
           % (took, subnets[0]))


@BOTH_APIS
def test_many_agents_started_at_once_get_distinct_subnets(lab, agent_path, etcd_api):
    with Cluster(lab, agent_path, api=etcd_api) as cluster:
        hosts = [lab.add_host() for _number in range(MANY_AGENTS)]
        started = time.monotonic()
        agents = [cluster.agent(host, "-reconcile-interval=60") for host in hosts]
        subnets = [IPNetwork(agent.wait_env(timeout=300)).cidr for agent in agents]
        took = time.monotonic() - started
        leases = cluster.registry.list_leases().leases
        record("%d agents at once (etcd %s)" % (MANY_AGENTS, etcd_api), "%d distinct subnets, all written %.1f s after the start"
               % (len(set(subnets)), took))
        assert len(set(subnets)) == MANY_AGENTS == len(leases)
        assert sorted(lease.attrs.public_ip for lease in leases) == sorted(host.address for host in hosts)


def test_out_of_subnets_retries_at_a_bounded_rate(lab, agent_path):
    config = ('{"Network": "10.0.0.0/16", "SubnetLen": 24, "SubnetMin": "10.0.1.0", "SubnetMax": "10.0.2.0", '
              '"Backend": {"Type": "vxlan"}}')
    with Cluster(lab, agent_path, config=config) as cluster:
        first, second = cluster.agent(lab.add_host()), cluster.agent(lab.add_host())
        subnets = [IPNetwork(agent.wait_env()).cidr for agent in (first, second)]
        extra_host = lab.add_host()
        extra = cluster.agent(extra_host, "-metrics=true")
        wait_for(lambda: "no free subnet" in extra.log, what="no free subnet")
        time.sleep(12)
        attempts = acquisition_attempts(extra_host)
        record("out of subnets", "%d attempts in the first ~12 s (backoff 1, 2, 4, 8 ... 30 s)" % attempts)
        assert 2 <= attempts <= 6
        assert error_lines(extra.log, "is leased") == 1  # one line for the episode, not one a try
        assert extra.healthz()[0] == 503 and first.healthz()[0] == 200 and second.healthz()[0] == 200
        assert str(subnets[1]) in first.routes(vni=1) and str(subnets[0]) in second.routes(vni=1)
