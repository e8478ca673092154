"""The wireguard backend's data path against wireguard-go alone, in network namespaces:

  .venv/bin/python tests/bench/bench_wireguard.py [ROUNDS]

Two namespace hosts with a real etcd run the built agent on {"Type": "wireguard"} (wireguard-go:
this kernel has no module), a container behind each. Each round measures, alternated in one run:
iperf3 container -> container over the agent's flannel-wg, and iperf3 host -> host over a tunnel
of its own between the same two hosts (playbooks/files/perf_probe.py wg-alone: wireguard-go
configured by hand, no agent). Prints Gbit/s per round, the ratio and the machine's load.
"""

import json
import os
import subprocess
import sys
import time

import benchpath  # sys.path as pytest.ini's
from netaddr import IPNetwork

from support.cluster import Cluster, build_agent
from support.netns import Lab, ping, run_in
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_keys import (
    new_private_key, public_key)

PROBE = os.path.join(benchpath.ROOT, "playbooks", "files", "perf_probe.py")
CONFIG = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0", '
          '"Backend": {"Type": "wireguard"}}')
SECONDS = 5


def iperf3(client_ns, server_ns, address):
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", "5209"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    result = run_in(client_ns, ["iperf3", "-J", "-c", address, "-p", "5209", "-t", SECONDS, "-O", "1"], check=False)
    server.wait(30)
    return json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def wg_alone(host, agent, plan):
    sockets = os.path.join(os.path.dirname(agent.key_file), "wireguard")
    host.run(["sh", "-c", 'mount --bind "$0" /run/wireguard && exec python3 "$1" wg-alone "$2"', sockets, PROBE,
              json.dumps(plan)])


def main(rounds):
    agent_dir = "/tmp/netlab-bench-wireguard"
    os.makedirs(agent_dir, exist_ok=True)
    lab = Lab()
    try:
        with Cluster(lab, build_agent(agent_dir), config=CONFIG, name="bench-wireguard", wireguard=True) as cluster:
            hosts = [lab.add_host(), lab.add_host()]
            agents = [cluster.agent(host) for host in hosts]
            subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
            containers = [lab.add_container(host, str(subnet)) for host, subnet in zip(hosts, subnets)]
            for agent in agents:
                agent.wait_ready()
            assert ping(containers[0].ns, containers[1].address, count=3, timeout=2), "overlay down"
            keys = [new_private_key() for _host in hosts]
            addresses = ["172.30.99.1", "172.30.99.2"]
            for me, (host, agent) in enumerate(zip(hosts, agents)):
                wg_alone(host, agent, {"action": "up", "private_key": keys[me], "port": 51821,
                                       "peer_public_key": public_key(keys[1 - me]),
                                       "endpoint": "%s:51821" % hosts[1 - me].address, "address": addresses[me],
                                       "peer_address": addresses[1 - me], "mtu": 1420})
            figures = []
            for number in range(rounds):
                overlay = iperf3(containers[0].ns, containers[1].ns, containers[1].address)
                alone = iperf3(hosts[0].ns, hosts[1].ns, addresses[1])
                figures.append((overlay, alone))
                load = " ".join(open("/proc/loadavg").read().split()[:3])
                print("round %d: container -> container over flannel-wg %.3f Gbit/s, wireguard-go alone %.3f Gbit/s, "
                      "ratio %.2f (load %s)" % (number + 1, overlay, alone, overlay / alone, load), flush=True)
            overlay = sorted(pair[0] for pair in figures)[len(figures) // 2]
            alone = sorted(pair[1] for pair in figures)[len(figures) // 2]
            print("median: %.3f / %.3f Gbit/s = %.2f" % (overlay, alone, overlay / alone))
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
