"""One host's side of playbooks/perf.yml's measurements; prints one JSON object.

  python3 perf_probe.py info CONTAINER
      the host's overlay address (docker0's), the test container's address, and the MTUs
  python3 perf_probe.py serve PLAN_JSON
      iperf3 servers in the host's and in the test container's network namespace, one test at a
      time, until every expected test has run; the host's CPU during each test
  python3 perf_probe.py client PLAN_JSON
      the plan's paths in turn: iperf3 with each stream count, then ping; the host's CPU
      during each iperf3 run

  python3 perf_probe.py wg-alone PLAN_JSON
      (plan "up") a WireGuard tunnel of its own, device wg-alone run by wireguard-go with the plan's
      keys, port, addresses and MTU, configured through its control socket: the wireguard
      backend's baseline, "wireguard-go alone" between the same two hosts; with a plan "container",
      also a container of that name started like the test container (plan "like": same image, on
      docker0 in the same Docker subnet), whose address it returns; (plan "route") the peer's such
      container carried by the tunnel: its address added to the peer's allowed IPs and routed
      through wg-alone (a /32, so the test containers' traffic stays on the overlay); (plan "down")
      the tunnel and the container removed

CPU is read from the cgroup that holds the host's init. On a lab node (a container on the
shared kernel) that cgroup counts every process of the node (iperf3, the agent, etcd, dockerd,
sshd) and the kernel's work done in their context: system calls, and the softirq processing run
on their way out (over veth, most of the receive path of the packets a process sends). Work done
by ksoftirqd is not in it. On a real host init sits in the root cgroup: the whole machine. The
machine-wide busy and softirq time from /proc/stat is recorded beside it.
Containers are entered with nsenter (network namespace only): the tools are the host's.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

USER_HZ = os.sysconf("SC_CLK_TCK")


def host_cpu_reader():
    """A function returning the host's CPU seconds so far, and what it reads."""
    lines = open("/proc/1/cgroup").read().splitlines()
    for line in lines:
        controllers, path = line.split(":", 2)[1:]
        path = re.sub(r"/init\.scope$", "", path).rstrip("/")
        if controllers == "" and len(lines) == 1:
            candidates = [("/sys/fs/cgroup%s/cpu.stat" % path, "usage_usec", 1e6)]
        elif "cpuacct" in controllers.split(","):
            candidates = [("/sys/fs/cgroup/%s%s/cpuacct.usage" % (mount, path), None, 1e9)
                          for mount in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")]
        else:
            continue
        if not path:
            break
        for name, key, scale in candidates:
            if os.path.exists(name):
                return _cgroup_reader(name, key, scale), "cgroup " + path
    return lambda: machine_cpu()[0], "whole machine (/proc/stat)"


def _cgroup_reader(name, key, scale):
    def read():
        with open(name) as handle:
            text = handle.read()
        if key is None:
            return int(text) / scale
        return int(re.search(r"^%s (\d+)" % key, text, re.M).group(1)) / scale
    return read


def machine_cpu():
    """(busy, softirq) CPU seconds of the whole machine."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / USER_HZ, softirq / USER_HZ


class CpuWindow:
    """CPU used between start() and stop(), as a percentage of one core."""

    def __init__(self, read_host):
        self.read_host = read_host

    def start(self):
        self.t0, self.host0, (self.busy0, self.soft0) = time.time(), self.read_host(), machine_cpu()
        return self

    def stop(self):
        t1, host1, (busy1, soft1) = time.time(), self.read_host(), machine_cpu()
        wall = max(t1 - self.t0, 1e-6)
        return {"seconds": round(wall, 3),
                "host_percent": round(100 * (host1 - self.host0) / wall, 1),
                "machine_busy_percent": round(100 * (busy1 - self.busy0) / wall, 1),
                "machine_softirq_percent": round(100 * (soft1 - self.soft0) / wall, 1)}


def run(argv, timeout=60):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                          check=False)


def container_pid(name):
    result = run(["docker", "inspect", "-f", "{{.State.Pid}}", name])
    if result.returncode != 0 or result.stdout.strip() in ("", "0"):
        raise SystemExit("perf_probe: test container %s is not running: %s" % (name, result.stderr.strip()))
    return int(result.stdout)


def in_netns(container, argv):
    """argv run in the container's network namespace (the host's when container is None)."""
    if container is None:
        return argv
    return ["nsenter", "-t", str(container_pid(container)), "-n"] + argv


def ipv4_of(argv):
    addresses = json.loads(run(argv + ["-j", "-4", "addr", "show"]).stdout or "[]")
    return {link["ifname"]: ([a["local"] for a in link.get("addr_info", [])], link.get("mtu"))
            for link in addresses}


def global_ipv6_of(argv):
    """The first global IPv6 address (a dual-stack container's), or None."""
    addresses = json.loads(run(argv + ["-j", "-6", "addr", "show", "scope", "global"]).stdout or "[]")
    return next((a["local"] for link in addresses for a in link.get("addr_info", [])), None)


def info(container):
    host = ipv4_of(["ip"])
    inside = ipv4_of(in_netns(container, ["ip"]))
    inside.pop("lo", None)
    container_if = next(iter(inside.values()), ([None], None))
    container_address6 = global_ipv6_of(in_netns(container, ["ip"]))
    subnet_env = {}
    if os.path.exists("/run/flannel/subnet.env"):
        subnet_env = dict(re.findall(r"(?m)^([A-Z_]+)=(\S*)", open("/run/flannel/subnet.env").read()))
    return {"overlay_address": host.get("docker0", ([None],))[0][0],
            "container": container, "container_address": container_if[0][0], "container_mtu": container_if[1],
            "container_address6": container_address6,
            "interfaces": {name: {"addresses": value[0], "mtu": value[1]} for name, value in host.items()},
            "flannel_mtu": subnet_env.get("FLANNEL_MTU"), "kernel": os.uname().release}


def numbers(plan):
    """The plan with its numbers as numbers (Ansible may pass them templated as strings)."""
    for key in ("seconds", "omit", "ping_count", "timeout", "port", "tests"):
        if key in plan:
            plan[key] = int(plan[key])
    for key in ("ping_interval", "idle_seconds"):
        if key in plan:
            plan[key] = float(plan[key])
    if "streams" in plan:
        plan["streams"] = [int(count) for count in plan["streams"]]
    for item in plan.get("servers", []) + plan.get("paths", []):
        numbers(item)
    return plan


def serve(plan):
    read_host, source = host_cpu_reader()
    started = time.time()
    idle = CpuWindow(read_host).start()
    results, first_accept, children = {}, [], []

    def one_server(server):
        tests = []
        while len(tests) < server["tests"]:
            # Line-buffered output: the window opens when the connection is accepted, not at exit.
            argv = ["stdbuf", "-oL", "iperf3", "-s", "-1", "--forceflush", "-p", str(server["port"])]
            proc = subprocess.Popen(in_netns(server["container"], argv),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            children.append(proc)
            window, output = None, []
            for line in proc.stdout:
                output.append(line)
                if window is None and line.startswith("Accepted connection"):
                    first_accept.append(time.time())
                    window = CpuWindow(read_host).start()
            proc.wait()
            tests.append({"rc": proc.returncode, "cpu": window.stop() if window else None,
                          "error": None if proc.returncode == 0 else "".join(output[-5:]).strip()})
            if time.time() - started > plan["timeout"]:
                break
        results[server["port"]] = tests

    # An idle reading first, while the client is still on its way.
    time.sleep(plan.get("idle_seconds", 1))
    idle_cpu = idle.stop()
    threads = [threading.Thread(target=one_server, args=(server,), daemon=True) for server in plan["servers"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(1, plan["timeout"] - (time.time() - started)))
    # A server still waiting (its client gave up) must not hold the port for the next case.
    for proc in children:
        if proc.poll() is None:
            proc.kill()
    return {"cpu_source": source, "idle_cpu": idle_cpu,
            "servers": [{"port": s["port"], "container": s["container"], "tests": results.get(s["port"], [])}
                        for s in plan["servers"]]}


def iperf3(path, streams, plan, read_host):
    argv = in_netns(path["container"], ["iperf3", "-J", "-c", path["target"], "-p", str(path["port"]),
                                        "-t", str(plan["seconds"]), "-O", str(plan["omit"]), "-P", str(streams)])
    deadline = time.time() + plan.get("connect_seconds", 15)
    while True:
        window = CpuWindow(read_host).start()
        result = run(argv, timeout=plan["seconds"] + plan["omit"] + 30)
        cpu = window.stop()
        try:
            report = json.loads(result.stdout)
        except ValueError:
            report = {"error": (result.stdout + result.stderr).strip()[-300:] or "no output"}
        # The server restarts between tests: a refused connection is retried for a while.
        if "error" in report and "connect" in report["error"] and time.time() < deadline:
            time.sleep(0.2)
            continue
        break
    if "error" in report:
        return {"streams": streams, "error": report["error"], "received_bps": 0, "sent_bps": 0, "cpu": cpu}
    end = report["end"]
    return {"streams": streams, "received_bps": end["sum_received"]["bits_per_second"],
            "sent_bps": end["sum_sent"]["bits_per_second"], "retransmits": end["sum_sent"].get("retransmits"),
            "iperf3_cpu": end.get("cpu_utilization_percent"), "cpu": cpu,
            "mss": report["start"].get("tcp_mss_default")}


def ping(path, plan):
    argv = in_netns(path["container"], ["ping", "-n", "-c", str(plan["ping_count"]), "-i", str(plan["ping_interval"]),
                                        "-W", "1", path["target"]])
    result = run(argv, timeout=plan["ping_count"] * plan["ping_interval"] + 60)
    samples = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", result.stdout))

    def quantile(q):
        return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else None

    return {"sent": plan["ping_count"], "received": len(samples), "p50_ms": quantile(0.50),
            "p99_ms": quantile(0.99), "min_ms": samples[0] if samples else None,
            "error": None if samples else (result.stdout + result.stderr).strip()[-300:]}


def client(plan):
    read_host, source = host_cpu_reader()
    idle_cpu = CpuWindow(read_host).start()
    time.sleep(plan.get("idle_seconds", 1))
    idle_cpu = idle_cpu.stop()
    paths = []
    for path in plan["paths"]:
        throughput = [iperf3(path, streams, plan, read_host) for streams in plan["streams"]]
        paths.append({"name": path["name"], "target": path["target"], "container": path["container"],
                      "port": path["port"], "throughput": throughput, "latency": ping(path, plan)})
    return {"cpu_source": source, "idle_cpu": idle_cpu, "paths": paths}


def _uapi_set(device, request):
    """Send a UAPI 'set' request to wireguard-go's control socket for `device`."""
    import socket

    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.settimeout(10)
    control.connect("/var/run/wireguard/%s.sock" % device)
    control.sendall(request.encode())
    answer = control.recv(4096).decode()
    control.close()
    if "errno=0" not in answer:
        raise SystemExit("perf_probe: wireguard-go refused the configuration: %r" % answer)


def _hexed(key):
    import base64

    return base64.b64decode(key).hex()


def _checked(argv):
    result = run(argv)
    if result.returncode != 0:
        raise SystemExit("perf_probe: %s: %s" % (" ".join(argv), (result.stderr or result.stdout).strip()))
    return result.stdout


def start_container_like(name, like):
    """A container `name` started as the test container `like` is (same image, default bridge);
    returns its address."""
    image = _checked(["docker", "inspect", "-f", "{{.Config.Image}}", like]).strip()
    _checked(["docker", "run", "-d", "--stop-timeout", "1", "--name", name, image,
              "sh", "-c", "while true; do sleep 3600; done"])
    return _checked(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name]).strip()


WG_ALONE_SCOPE = "netlab-perf-wg-alone.scope"


def wg_alone(plan, device="wg-alone"):
    """Bring the baseline tunnel up or down, or route the peer's baseline container through it
    (see the module's note); prints what it did."""
    if plan["action"] == "route":
        _uapi_set(device, "set=1\npublic_key=%s\nallowed_ip=%s/32\n\n"
                  % (_hexed(plan["peer_public_key"]), plan["peer_container_address"]))
        _checked(["ip", "route", "replace", plan["peer_container_address"] + "/32", "dev", device])
        return {"device": device, "routed": plan["peer_container_address"]}
    run(["ip", "link", "delete", device])
    under_systemd = os.path.isdir("/run/systemd/system")
    if under_systemd:
        run(["systemctl", "stop", WG_ALONE_SCOPE])
    if plan.get("container"):
        run(["docker", "rm", "-f", plan["container"]])
    if plan["action"] == "down":
        return {"device": device, "removed": True}
    environment = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    # wireguard-go in a unit of its own, as a daemon runs (the agent's runs in flanneld.service),
    # not in the cgroup of the command that starts it: there (sshd's, with iperf3) the scheduler
    # shares CPU between iperf3 and wireguard-go as threads of one group instead of between two
    # units, which changed both the throughput and iperf3's own CPU (BENCHMARKS.md, issue 23).
    argv = ["wireguard-go", device]
    if under_systemd:
        argv = ["systemd-run", "--quiet", "--scope", "--collect", "--unit", WG_ALONE_SCOPE] + argv
    started = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=environment, timeout=30, check=False)
    if started.returncode != 0:
        raise SystemExit("perf_probe: wireguard-go %s: %s" % (device, started.stdout.strip()[-300:]))
    _uapi_set(device, "set=1\nprivate_key=%s\nlisten_port=%d\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/32\n\n"
              % (_hexed(plan["private_key"]), int(plan["port"]), _hexed(plan["peer_public_key"]), plan["endpoint"],
                 plan["peer_address"]))
    _checked(["ip", "address", "add", plan["address"] + "/24", "dev", device])
    _checked(["ip", "link", "set", device, "mtu", str(plan["mtu"]), "up"])
    done = {"device": device, "address": plan["address"], "mtu": int(plan["mtu"])}
    if plan.get("container"):
        done["container_address"] = start_container_like(plan["container"], plan["like"])
    return done


def main(argv):
    if len(argv) != 3 or argv[1] not in ("info", "serve", "client", "wg-alone"):
        raise SystemExit(__doc__)
    if argv[1] == "info":
        print(json.dumps(info(argv[2])))
    elif argv[1] == "wg-alone":
        print(json.dumps(wg_alone(json.loads(argv[2]))))
    else:
        plan = numbers(json.loads(argv[2]))
        print(json.dumps(serve(plan) if argv[1] == "serve" else client(plan)))


if __name__ == "__main__":
    main(sys.argv)
