"""The wireguard backend on the lab (under its lock; the lab's kernel has no wireguard module, so
wireguard-go runs flannel-wg): site.yml with the wireguard config on the running vxlan lab, with
wireguard-go purged from the second node first (the node image has it, a real host may not: the
flanneld role installs it) and verify.yml green; a capture on the lab bridge sees nothing but
UDP 51820 between the nodes besides etcd's own TCP, and no inner IP header in clear; the stored
config switched to vxlan and back while test1 pings test2 (echoes lost counted and printed, not
asserted: the machine's load decides them); teardown.yml on wireguard removes flannel-wg and stops
wireguard-go (the data plane outlives the agent, so stopping the agent alone would leave both);
site.yml brings the lab back to the inventory's vxlan config, verify.yml green: the perf smoke's
bring-up (teardown.yml, site.yml, verify.yml), which starts where this case ends
(labtools.hand_over), or back_to_the_inventory_config when it does not follow."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import time

from support.labtools import (NODE1, NODE2, NODES, PLAYBOOKS, ROOT, docker_exec, ensure_lab, hand_over, lab_snapshot, own_agent_installed,
                              run)
from support.pcap import ip_packets
from test_upstream_agent import run_ok

SITE = os.path.join(ROOT, "playbooks", "site.yml")
VERIFY = os.path.join(ROOT, "playbooks", "verify.yml")
TEARDOWN = os.path.join(ROOT, "playbooks", "teardown.yml")
ROLE = os.path.join(PLAYBOOKS, "role.yml")
NETWORK = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0"}
WIREGUARD = dict(NETWORK, Backend={"Type": "wireguard"})
VXLAN = dict(NETWORK, Backend={"Type": "vxlan", "VNI": 100, "Port": 8472})
ETCD_PORTS = (2379, 2380)
# This case's end, handed over to test_perf's smoke (labtools.hand_over; conftest runs it last).
TORN_DOWN_AFTER_WIREGUARD = "teardown.yml run on wireguard (etcd and the stored wireguard config left)"
# flannel-wg, then a line "wireguard-go" per wireguard-go process on the node.
WIREGUARD_LEFT = "ip -o link show flannel-wg 2>&1; echo; cat /proc/[0-9]*/comm 2>/dev/null | grep -x wireguard-go || true"


def container_address(node, container):
    return docker_exec(node, "docker inspect -f '{{.NetworkSettings.IPAddress}}' %s" % container).strip()


class Pinger:
    """test1 -> test2 every 0.1 s, inside the first node (busybox ping)."""

    def __init__(self, target, count):
        self.process = subprocess.Popen(["docker", "exec", NODE1, "docker", "exec", "test1", "ping", "-c",
                                         str(count), "-i", "0.1", "-W", "1", target],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)

    def lost(self):
        out = self.process.communicate(timeout=300)[0]
        match = re.search(r"(\d+) packets transmitted, (\d+) packets received", out)
        assert match, out[-500:]
        return int(match.group(1)) - int(match.group(2)), int(match.group(1))


def switch_while_pinging(config, device, target):
    """Store `config` (the agents switch without a restart) while test1 pings test2; (lost, sent)."""
    pinger = Pinger(target, 150)
    time.sleep(1.0)
    run_ok(ROLE, {"integration_role": "network_config", "integration_hosts": NODE1,
                  "network_config_flannel": config})
    wait_for_device(device)
    return pinger.lost()


def wait_for_device(device):
    deadline = time.monotonic() + 60
    while any("flannel" not in docker_exec(node, "ip -o link show %s 2>/dev/null || true" % device)
              for node in NODES):
        assert time.monotonic() < deadline, "%s not on every node after 60 s" % device
        time.sleep(0.2)


def lab_bridge():
    network_id = run(["docker", "network", "inspect", "-f", "{{.Id}}", "netlab"]).stdout.strip()
    return "br-" + network_id[:12]


def test_wireguard_on_the_lab_switch_verify_and_capture(lab):
    with lab():
        ensure_lab()
        # Every lab case ends on the inventory's config: site.yml only when another checkout's run
        # left the lab (a no-change run, about 24 s, otherwise).
        if not own_agent_installed():
            run_ok(SITE)
        run_ok(VERIFY)  # the vxlan overlay before the switch; it makes the test containers when the lab has none
        target = container_address(NODE2, "test2")
        source = container_address(NODE1, "test1")
        lost = {}
        handed_over = False
        try:
            # The agents pick the new config up as soon as site.yml stores it, before the flanneld
            # role has installed wireguard-go on the second node: that agent must get to it all the same.
            docker_exec(NODE2, "apt-get purge -y -q wireguard-go >/dev/null && ! command -v wireguard-go")
            site = run_ok(SITE, {"network_config_flannel": WIREGUARD})
            for task_name in ("Install wireguard-go", "Have the running agent try the stored wireguard"):
                task = [task for task in site.split("TASK [")
                        if task.startswith("netlab.flannel.flanneld : " + task_name)]
                assert len(task) == 1 and "changed: [%s]" % NODE2 in task[0], task
            installed = docker_exec(NODE2, "dpkg-query -W -f '${Status}' wireguard-go")
            assert installed == "install ok installed", installed
            verified = run_ok(VERIFY)
            # Its last play drew the overlay: each host with its PublicKey, no host marked.
            assert "0 host(s) disagreeing" in verified, verified[-3000:]
            with open(os.path.join(ROOT, "build", "overlay.svg")) as handle:
                svg = handle.read().replace("&#45;", "-")
            assert "UDP 51820, encrypted" in svg and "DISAGREES" not in svg and "missing:" not in svg
            leases = [json.loads(value) for key, value in lab_snapshot()["etcd"].items() if "/subnets/" in key]
            assert len(leases) == len(NODES), leases
            for lease in leases:
                assert "PublicKey " + lease["BackendData"]["PublicKey"] in svg, lease
            target = container_address(NODE2, "test2")  # verify.yml may have made them again
            source = container_address(NODE1, "test1")
            first, second = sorted(NODES.values())
            capture = subprocess.Popen(["tcpdump", "-i", lab_bridge(), "--immediate-mode", "-U", "-w", "-",
                                        "host %s and host %s" % (first, second)],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            time.sleep(1.5)
            pinged = docker_exec(NODE1, "docker exec test1 ping -c 10 -i 0.2 %s" % target)
            time.sleep(0.5)
            capture.send_signal(signal.SIGINT)
            packets = ip_packets(capture.communicate(timeout=20)[0])
            assert "10 packets received" in pinged, pinged
            inner = socket.inet_aton(source) + socket.inet_aton(target)
            others = []
            wireguard = 0
            for packet in packets:
                payload = packet[(packet[0] & 0x0F) * 4:]
                ports = struct.unpack("!HH", payload[:4])
                if packet[9] == socket.IPPROTO_TCP and set(ports) & set(ETCD_PORTS):
                    continue  # the etcd members' own traffic
                if packet[9] == socket.IPPROTO_UDP and ports == (51820, 51820):
                    wireguard += 1
                else:
                    others.append((packet[9], ports))
                assert inner not in packet and inner[4:] + inner[:4] not in packet
            assert wireguard >= 20 and others == [], (wireguard, others[:10])
            lost["wireguard -> vxlan"] = switch_while_pinging(VXLAN, "flannel.100", target)
            lost["vxlan -> wireguard"] = switch_while_pinging(WIREGUARD, "flannel-wg", target)

            # teardown.yml on wireguard.
            for node in NODES:
                running = docker_exec(node, WIREGUARD_LEFT)
                assert "flannel-wg:" in running and "\nwireguard-go" in running, "%s: %s" % (node, running)
            run_ok(TEARDOWN)
            for node in NODES:
                left = docker_exec(node, WIREGUARD_LEFT)
                assert "flannel-wg:" not in left and "\nwireguard-go" not in left, "%s after teardown: %s" % (node, left)
            print("echoes at 0.1 s lost while switching: %s" % lost)
            # The lab torn down for the perf smoke, which starts with teardown.yml, then site.yml and
            # verify.yml (the return checked there); without it, back_to_the_inventory_config.
            hand_over(TORN_DOWN_AFTER_WIREGUARD, back_to_the_inventory_config)
            handed_over = True
        finally:
            if not handed_over:
                run_ok(SITE)  # back to the inventory's config when a check failed: the lab is shared


def back_to_the_inventory_config():
    """site.yml brings the inventory's vxlan config back after wireguard's teardown; verify.yml green."""
    run_ok(SITE)
    run_ok(VERIFY)
