"""The extension backend (flanneld v0.10's): the user's commands make the data plane. Real agents on
namespace hosts with a real etcd; the commands write what they were given into the test's directory
(the hosts share the file system), so each assertion reads what a command really saw."""

import json
import os
import signal

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for
from support.netns import ping
from test_config_change import BASE, VXLAN_100, _links, _start, _switch

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs

# A peer's file name from its subnet: 10.10.16.0/20 -> 10.10.16.0-20.
SUBNET_FILE = "$(echo $SUBNET | tr / -)"


def routes_recipe(directory, timeout=30):
    """Plain routes through the peers' eth0 addresses, as host-gw makes them: the gateway is the
    peer's BackendData (its PreStartupCommand printed its eth0 address), read from standard input,
    and each command records its input and environment."""
    return dict(BASE, Backend={
        "Type": "extension",
        "CommandTimeout": timeout,
        # No shell: split into words and run as is.
        "PreStartupCommand": "ip -4 -o -brief address show dev eth0",
        "PostStartupCommand": "sh -c 'env > %s/post-$PUBLIC_IP'" % directory,
        "SubnetAddCommand": "sh -c 'f=%s/add-%s; cat > $f; read name state address < $f; "
                            "ip route replace $SUBNET via ${address%%/*} dev eth0 && env > $f-env'"
                            % (directory, SUBNET_FILE),
        "SubnetRemoveCommand": "sh -c 'read name state address; ip route del $SUBNET via ${address%%/*} dev eth0; "
                               "echo $state $address > %s/remove-%s'" % (directory, SUBNET_FILE),
    })


def _read(path):
    with open(path) as handle:
        return handle.read()


def _env(path):
    return dict(line.split("=", 1) for line in _read(path).splitlines())


def _file_name(subnet):
    return "%s-%d" % (subnet.ip, subnet.prefixlen)


def _container(lab, host, subnet):
    return lab.add_container(host, "%s/%d" % (subnet.network + 1, subnet.prefixlen))


def test_commands_build_a_data_plane_with_the_leases_data_and_ping_across(lab, agent_path, tmp_path):
    directory = str(tmp_path)
    with Cluster(lab, agent_path, config=json.dumps(routes_recipe(directory)), name="extension-routes") as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host) for host in hosts]
        subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
        for agent in agents:
            agent.wait_ready()
        data = {}
        for host, subnet in zip(hosts, subnets):  # "eth0@if3  UP  172.31.250.11/24", spaces as ip prints them
            data[host.address] = json.loads(cluster.lease_value(str(subnet)))["BackendData"]
            assert data[host.address].split()[1:] == ["UP", "%s/24" % host.address]
            assert cluster.lease_value(str(subnet)) == json.dumps(
                {"PublicIP": host.address, "BackendType": "extension", "BackendData": data[host.address]},
                separators=(",", ":"))
        for agent, subnet in zip(agents, subnets):
            assert agent.env() == {"FLANNEL_NETWORK": "10.0.0.0/8", "FLANNEL_SUBNET": "%s/20" % (subnet.network + 1),
                                   "FLANNEL_MTU": "1500", "FLANNEL_IPMASQ": "false"}
        # PostStartupCommand: NETWORK, SUBNET and PUBLIC_IP of this host, PATH, nothing of the agent's.
        for host, subnet in zip(hosts, subnets):
            env = _env(wait_for(lambda: os.path.exists("%s/post-%s" % (directory, host.address))
                                and "%s/post-%s" % (directory, host.address), what="post-start command"))
            assert dict((key, env[key]) for key in ("NETWORK", "SUBNET", "PUBLIC_IP")) == {
                "NETWORK": "10.0.0.0/8", "SUBNET": str(subnet), "PUBLIC_IP": host.address}
            assert set(env) - {"PWD", "SHLVL", "_"} == {"PATH", "NETWORK", "SUBNET", "PUBLIC_IP"}
        # SubnetAddCommand: the peer's SUBNET and PUBLIC_IP, its BackendData and a newline on stdin.
        for host, subnet, peer, peer_subnet in zip(hosts, subnets, hosts[::-1], subnets[::-1]):
            added = "%s/add-%s" % (directory, _file_name(peer_subnet))
            wait_for(lambda: os.path.exists(added + "-env"), what="add command for %s" % peer_subnet)
            assert _read(added) == data[peer.address] + "\n"
            env = _env(added + "-env")

            assert (env["SUBNET"], env["PUBLIC_IP"]) == (str(peer_subnet), peer.address)
            assert "NETWORK" not in env
            assert "%s via %s dev eth0" % (peer_subnet, peer.address) in host.run(["ip", "route"]).stdout
        one, two = _container(lab, hosts[0], subnets[0]), _container(lab, hosts[1], subnets[1])
        assert len(ping(one.ns, two.address, count=2)) == 2
        assert len(ping(two.ns, one.address, count=2)) == 2

        # A peer gone: its remove command runs with its last lease's data; its route goes.
        agents[1].stop(signal.SIGKILL)
        cluster.registry.delete_lease(cluster.registry.get_lease(subnets[1]))
        removed = "%s/remove-%s" % (directory, _file_name(subnets[1]))
        wait_for(lambda: os.path.exists(removed), what="remove command")
        assert _read(removed) == "UP %s/24\n" % hosts[1].address
        assert str(subnets[1]) not in hosts[0].run(["ip", "route"]).stdout
        assert "ERROR" not in agents[0].log and "Traceback" not in agents[0].log


HANGING = "6123"  # sleep's argument in the hanging command: how the test finds its processes


def _hanging_processes():
    """PIDs of the hanging command's processes (read from /proc: the namespaces share it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                if handle.read().split(b"\0")[:2] == [b"sleep", HANGING.encode()]:
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _peer(cluster, subnet, address):
    cluster.registry.create_lease(IPNetwork(subnet), LeaseAttrs(address, "extension", backend_data="x"), 600)


@pytest.mark.control_plane  # no overlay traffic, no loss counted
def test_failing_and_hanging_commands_are_logged_and_the_agent_runs_on(lab, agent_path, tmp_path):
    """A command that hangs is killed after CommandTimeout with everything it started, and holds
    up neither the agent's loop nor (after it) the other peers' commands; a failure is logged with
    its exit status and stderr, and its add command runs again at the next reconcile."""
    directory, timeout = str(tmp_path), 20
    config = dict(BASE, Backend={"Type": "extension", "CommandTimeout": timeout, "SubnetAddCommand": (
        "sh -c 'case $PUBLIC_IP in "
        "*.50) [ -e %s/hung ] || { touch %s/hung; sleep %s & exec sleep %s; };; "
        "*.51) [ -e %s/fixed ] || { echo no route to $SUBNET >&2; exit 3; };; esac; "
        "touch %s/added-$PUBLIC_IP'" % ((directory,) * 2 + (HANGING,) * 2 + (directory,) * 2))})
    with Cluster(lab, agent_path, config=json.dumps(config), name="extension-failures") as cluster:
        agent = cluster.agent(lab.add_host(), "-reconcile-interval=2")
        agent.wait_ready()
        _peer(cluster, "10.20.0.0/20", "172.31.250.50")
        wait_for(lambda: len(_hanging_processes()) == 2, what="the hanging command's two processes")
        _peer(cluster, "10.30.0.0/20", "172.31.250.51")
        _peer(cluster, "10.40.0.0/20", "172.31.250.52")
        # While it hangs, the loop follows etcd: both new peers are in the table and /healthz says so.
        wait_for(lambda: "3 peers" in agent.healthz()[1], what="3 peers on /healthz while a command hangs")
        assert agent.healthz()[0] == 200
        assert len(_hanging_processes()) == 2, "the command ended before the checks ran: nothing was shown"

        hung = ("SubnetAddCommand for peer 10.20.0.0/20 at 172.31.250.50 failed: still running after %d s: "
                "killed with its process group; no output; it runs again at the next reconcile" % timeout)
        wait_for(lambda: hung in agent.log, timeout + 10, what="the timeout logged")
        # Killed with its group before the line was logged (the wait only lets SIGKILL land); the
        # next run of that add command (it hangs only once) succeeds.
        wait_for(lambda: _hanging_processes() == [], what="both processes of the hanging command gone")
        wait_for(lambda: os.path.exists("%s/added-172.31.250.50" % directory), what="the timed-out command run again")
        failed = ("SubnetAddCommand for peer 10.30.0.0/20 at 172.31.250.51 failed: exit status 3; "
                  "stderr: no route to 10.30.0.0/20; it runs again at the next reconcile")
        wait_for(lambda: failed in agent.log, what="the failure logged")
        wait_for(lambda: os.path.exists("%s/added-172.31.250.52" % directory), what="the next peer's command")
        # Fixed: the reconcile runs the failed add command again, and it succeeds.
        open("%s/fixed" % directory, "w").close()
        wait_for(lambda: os.path.exists("%s/added-172.31.250.51" % directory), what="the failed command run again")
        assert "reconcile repaired: queued SubnetAddCommand for peer 10.30.0.0/20 at 172.31.250.51" in agent.log
        assert agent.process.poll() is None and agent.healthz()[0] == 200
        assert "Traceback" not in agent.log


@pytest.mark.control_plane  # no overlay traffic, no loss counted
def test_a_failing_pre_startup_command_stops_the_agent_at_start_and_a_switch_to_it_is_refused(lab, agent_path):
    """Its output is the lease's BackendData: without it there is no lease to publish. At start-up
    the agent exits (status 1) saying why; a live switch to such a config keeps the config in force."""
    failing = dict(BASE, Backend={"Type": "extension", "PreStartupCommand": "sh -c 'echo no key here >&2; exit 4'"})
    with Cluster(lab, agent_path, config=json.dumps(failing), name="extension-pre-fails") as cluster:
        agent = cluster.agent(lab.add_host())
        assert agent.process.wait(20) == 1
        assert ("backend extension: PreStartupCommand sh -c 'echo no key here >&2; exit 4' failed: exit status 4; "
                "stderr: no key here") in agent.log
        assert "Traceback" not in agent.log

        cluster.registry.put_config(json.dumps(dict(BASE, Backend={"Type": "host-gw"})))
        agent = cluster.agent(agent.host)
        agent.wait_ready()
        cluster.registry.put_config(json.dumps(failing))
        wait_for(lambda: "cannot run here: backend extension: PreStartupCommand" in agent.healthz()[1],
                 what="the refusal on /healthz")
        assert agent.healthz()[0] == 200 and agent.process.poll() is None


def test_live_switch_vxlan_to_extension_and_back_while_pinging(lab, cluster, tmp_path):
    """To extension: its commands route the peers (via eth0) and flannel.100 goes; back to vxlan:
    the remove commands run for every peer, and vxlan routes them again. Pings lost per switch go
    to build/reliability-figures.txt."""
    directory = str(tmp_path)
    hosts, agents, subnets = _start(lab, cluster)
    containers = [_container(lab, host, subnet) for host, subnet in zip(hosts, subnets)]
    lost = _switch(cluster, agents, containers, routes_recipe(directory), "vxlan -> extension (routes)")
    for host, agent, subnet, other, peer in zip(hosts, agents, subnets, subnets[::-1], hosts[::-1]):
        assert "flannel.100" not in _links(host)
        assert json.loads(cluster.lease_json(str(subnet)))["BackendType"] == "extension"
        wait_for(lambda: "%s via %s dev eth0" % (other, peer.address) in host.run(["ip", "route"]).stdout,
                 what="%s routing %s by its add command" % (host.name, other))
        assert agent.env()["FLANNEL_MTU"] == "1500"
    assert len(ping(containers[0].ns, containers[1].address, count=2)) == 2
    assert lost <= 10

    lost = _switch(cluster, agents, containers, VXLAN_100, "extension -> vxlan")
    for host, agent, other in zip(hosts, agents, subnets[::-1]):
        assert os.path.exists("%s/remove-%s" % (directory, _file_name(other)))
        wait_for(lambda: agent.routes().get(str(other), {}).get("onlink"), what="%s routing %s by vxlan again"
                 % (host.name, other))
        assert str(other) not in host.run(["ip", "route", "show", "dev", "eth0"]).stdout
    assert len(ping(containers[1].ns, containers[0].address, count=2)) == 2
    assert lost <= 10
    for agent in agents:
        assert agent.process.poll() is None and "Traceback" not in agent.log


@pytest.mark.control_plane  # no overlay traffic, no loss counted
def test_a_changed_peer_lease_runs_remove_then_add_and_a_renewal_runs_nothing(lab, agent_path, tmp_path):
    """The remove command gets the old lease's data, the add command the new one's; a renewal (the
    same attributes) runs no command (v0.10 runs the add again at each renewal)."""
    record = "%s/commands" % tmp_path
    config = dict(BASE, Backend={"Type": "extension",
                                 "SubnetAddCommand": "sh -c 'echo add $SUBNET $PUBLIC_IP $(cat) >> %s'" % record,
                                 "SubnetRemoveCommand": "sh -c 'echo remove $SUBNET $PUBLIC_IP $(cat) >> %s'" % record})
    with Cluster(lab, agent_path, config=json.dumps(config), name="extension-changes") as cluster:
        agent = cluster.agent(lab.add_host())
        agent.wait_ready()
        subnet = IPNetwork("10.20.0.0/20")
        lease = cluster.registry.create_lease(subnet, LeaseAttrs("172.31.250.50", "extension", backend_data="old"), 600)
        wait_for(lambda: os.path.exists(record), what="the add command")
        lease = cluster.registry.update_lease(lease, LeaseAttrs("172.31.250.51", "extension", backend_data="new"), 600)
        wait_for(lambda: _read(record).count("\n") == 3, what="remove and add for the change")
        cluster.registry.update_lease(lease, lease.attrs, 900)  # a renewal
        cluster.registry.delete_lease(cluster.registry.get_lease(subnet))
        wait_for(lambda: _read(record).count("\n") == 4, what="remove for the deletion")
        assert _read(record).splitlines() == [
            "add 10.20.0.0/20 172.31.250.50 old", "remove 10.20.0.0/20 172.31.250.50 old",
            "add 10.20.0.0/20 172.31.250.51 new", "remove 10.20.0.0/20 172.31.250.51 new"]
