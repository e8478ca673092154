"""Pings between every ordered pair of lab hosts' test containers while something else runs (a
rolling restart, a member down), counted per pair. Only lab addresses are pinged, from inside the
lab's nodes.

Two ways to send:
- from_containers: each test container pings every other one (busybox ping in the container).
  A sender whose container stops loses its pings' summary: use it where containers keep running
  (an agent restart).
- from hosts (from_containers=False): each node, in its own network namespace, pings every other
  node's test container across the overlay. These senders survive a Docker restart, so the lost
  replies count how long each host's container was unreachable.
"""

import re
import subprocess
import time

TAG = "netlab-pair-ping"
SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) packets received")
REPLY = re.compile(r"seq=(\d+) ")


def docker_exec(node, command):
    return subprocess.run(["docker", "exec", node, "sh", "-c", command], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120, check=False).stdout


def container_ip(node, container):
    return docker_exec(node, "docker inspect -f '{{.NetworkSettings.IPAddress}}' %s" % container).strip()


class PairPings:
    """containers: {node: its test container}; interval: seconds between echo requests."""

    def __init__(self, containers, interval=0.1, from_containers=True):
        self.containers = dict(containers)
        self.interval = interval
        self.from_containers = from_containers
        self.addresses = {}
        self.started = None

    def _sender(self, node, command):
        if self.from_containers:
            return docker_exec(node, "docker exec %s sh -c %s" % (self.containers[node], _quote(command)))
        return docker_exec(node, command)

    def start(self):
        self.addresses = dict((node, container_ip(node, name)) for node, name in self.containers.items())
        assert all(self.addresses.values()), self.addresses
        ping = "ping" if self.from_containers else "busybox ping"
        for node in self.containers:
            peers = " ".join(address for other, address in self.addresses.items() if other != node)
            # Each ping writes its summary on SIGINT; its pid file lets stop() signal only these.
            self._sender(node, "rm -f /tmp/%s-*; for ip in %s; do %s -i %s -W 1 $ip > /tmp/%s-$ip.log 2>&1 & "
                               "echo $! > /tmp/%s-$ip.pid; done" % (TAG, peers, ping, self.interval, TAG, TAG))
        self.started = time.monotonic()

    def stop(self):
        """{(sender node, receiver node): (sent, received)}; a sender whose log has no summary
        (its container restarted) counts as (None, None). Requests sent after the last one
        answered (in flight when the ping was stopped) are not counted as sent."""
        seconds = time.monotonic() - self.started
        for node in self.containers:
            self._sender(node, "for f in /tmp/%s-*.pid; do kill -INT $(cat $f); done 2>/dev/null; true" % TAG)
        time.sleep(1)
        counts = {}
        for node in self.containers:
            for other, address in self.addresses.items():
                if other == node:
                    continue
                counts[(node, other)] = _count(self._sender(node, "cat /tmp/%s-%s.log 2>/dev/null" % (TAG, address)))
            self._sender(node, "rm -f /tmp/%s-*" % TAG)
        self.seconds = seconds
        return counts


def _count(log):
    """(sent, received) from one ping's output, up to the last request answered."""
    summary = SUMMARY.search(log)
    if not summary:
        return (None, None)
    answered = set(int(sequence) for sequence in REPLY.findall(log))
    if not answered:
        return (int(summary.group(1)), 0)
    return (max(answered) + 1, len(answered))


def lost(counts):
    """Echo requests without a reply over every pair that reported."""
    return sum(sent - received for sent, received in counts.values() if sent is not None)


def describe(counts):
    return ", ".join("%s->%s %s/%s" % (sender[-1], receiver[-1], received, sent)
                     for (sender, receiver), (sent, received) in sorted(counts.items()))


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"
