"""A mixed cluster on one extension config: upstream flanneld v0.10.0 and our agent run the same
commands, which build an encrypted overlay with wireguard-go (the recipe people used before flannel
had a wireguard backend), and containers ping both ways through it.

Each line starts its own shell, so it runs the same under upstream (which puts every line through
`sh -c`) and ours (which runs it as written). The namespace hosts share one file system, and
wireguard-go's control socket is a file (/var/run/wireguard/<device>.sock): the recipe names its
device and key file after the host's network namespace. On real hosts a fixed name does.
"""

import json
import shutil

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for
from support.netns import ping

pytestmark = pytest.mark.usefixtures("upstream")

HOST_ID = "$(stat -L -c %i /proc/self/ns/net)"  # this namespace's inode: unique while it lives
DEVICE = "d=fw" + HOST_ID  # fw4026532123: within IFNAMSIZ


def wireguard_recipe(directory):
    key = "%s/wg-%s.key" % (directory, HOST_ID)
    return {"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {
        "Type": "extension",
        # The public key is the lease's BackendData; the private key stays in its 0600 file.
        "PreStartupCommand": "sh -c 'umask 077; [ -s %s ] || wg genkey > %s; wg pubkey < %s'" % (key, key, key),
        # wireguard-go becomes a daemon: its output must not keep upstream's pipe open.
        "PostStartupCommand": "sh -c '%s; ip link del $d 2>/dev/null; wireguard-go $d </dev/null >/dev/null 2>&1 "
                              "&& wg set $d listen-port 51820 private-key %s && ip link set $d up'" % (DEVICE, key),
        "SubnetAddCommand": "sh -c 'read key; %s; wg set $d peer $key endpoint $PUBLIC_IP:51820 allowed-ips $SUBNET "
                            "&& ip route replace $SUBNET dev $d'" % DEVICE,
        "SubnetRemoveCommand": "sh -c 'read key; %s; wg set $d peer $key remove; ip route del $SUBNET dev $d'"
                               % DEVICE,
    }}


def _public_key(host, device):
    """The device's public key, or None while it has no private key (or no device) yet."""
    key = host.run(["wg", "show", device, "public-key"], check=False).stdout.strip()
    return key if key and key != "(none)" else None


def _device(host):
    return "fw%s" % host.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).stdout.strip()


@pytest.mark.skipif(not (shutil.which("wireguard-go") and shutil.which("wg")),
                    reason="wireguard-go and wg are absent (make prereqs installs them)")
def test_upstream_and_ours_on_one_wireguard_go_extension_config_ping_both_ways(lab, agent_path, tmp_path):
    hosts = [lab.add_host(), lab.add_host()]
    try:
        with Cluster(lab, agent_path, config=json.dumps(wireguard_recipe(str(tmp_path))),
                     name="mixed-extension") as cluster:
            _ping_through_wireguard_go(lab, cluster, hosts)
    finally:  # wireguard-go outlives the namespace unless its device goes first
        for host in hosts:
            host.run(["ip", "link", "del", _device(host)], check=False)


def _ping_through_wireguard_go(lab, cluster, hosts):
    agents = [cluster.agent(hosts[0], kind="upstream"), cluster.agent(hosts[1])]
    subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
    for agent in agents:
        agent.wait_ready()
    keys = []
    for host, agent, subnet in zip(hosts, agents, subnets):
        device = _device(host)
        # Ours runs the post-start command on its command thread: it may end after /healthz is 200.
        key = wait_for(lambda: _public_key(host, device), what="%s's device with its private key" % host.name)
        keys.append(key)
        assert cluster.lease_value(str(subnet)) == (
            '{"PublicIP":"%s","BackendType":"extension","BackendData":"%s"}' % (host.address, key))
        assert agent.env()["FLANNEL_MTU"] == "1500"  # the interface's, as v0.10 writes it for extension
    for host, peer, peer_subnet, peer_key in zip(hosts, hosts[::-1], subnets[::-1], keys[::-1]):
        device = _device(host)
        wait_for(lambda: "%s\t(none)\t%s:51820\t%s\t" % (peer_key, peer.address, peer_subnet) in
                 host.run(["wg", "show", device, "dump"]).stdout, what="%s holding its peer" % host.name)
        assert "%s dev %s" % (peer_subnet, device) in host.run(["ip", "route"]).stdout
    one = lab.add_container(hosts[0], "%s/20" % (subnets[0].network + 1))
    two = lab.add_container(hosts[1], "%s/20" % (subnets[1].network + 1))
    assert len(ping(one.ns, two.address, count=3)) == 3
    assert len(ping(two.ns, one.address, count=3)) == 3
    # Through the tunnel: both sides saw a handshake.
    for host in hosts:
        assert any(int(line.split("\t")[4]) > 0 for line in
                   host.run(["wg", "show", _device(host), "dump"]).stdout.splitlines()[1:])
    assert "ERROR" not in agents[1].log and "Traceback" not in agents[1].log
