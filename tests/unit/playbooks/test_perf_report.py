"""playbooks/files/perf_report.py's figures from perf.json: the wireguard case's alternated rounds
(container -> container over flannel-wg, wireguard-go alone) are one row per path and one ratio,
the median of the rounds' ratios. The playbook itself runs on the lab (make perf, and
tests/integration/test_perf.py's smoke)."""

import importlib.util
import os

# A script beside the playbooks (run by perf.yml on the controller), not a package: loaded by path.
_SPEC = importlib.util.spec_from_file_location("perf_report", os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "playbooks", "files", "perf_report.py"))
perf_report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(perf_report)


def _path(name, gbps, container=None, p50=0.2):
    cpu = {"host_percent": 40.0, "machine_busy_percent": 150.0, "machine_softirq_percent": 5.0}
    return {"name": name, "target": "x", "container": container,
            "throughput": [{"streams": 1, "received_bps": gbps * 1e9, "cpu": cpu}],
            "latency": {"received": 10, "p50_ms": p50, "p99_ms": p50 * 2, "error": None}}


def _case(paths):
    host_tests = [{"rc": 0, "cpu": {"host_percent": 50.0}} for path in paths if path["container"] is None]
    container_tests = [{"rc": 0, "cpu": {"host_percent": 60.0}} for path in paths if path["container"]]
    return {"mtu": 1500, "backend": "wireguard", "agent": "ours", "variant": None, "label": "wireguard",
            "sender_info": {"flannel_mtu": 1420},
            "client": {"paths": paths, "idle_cpu": {"host_percent": 1.0}, "cpu_source": "cgroup x"},
            "server": {"servers": [{"container": None, "tests": host_tests},
                                   {"container": "test2", "tests": container_tests}],
                       "idle_cpu": {"host_percent": 1.0}}}


def test_alternated_rounds_give_one_row_per_path_and_the_median_of_the_rounds_ratios():
    paths = [_path("underlay", 10.0)]
    # Round 2 ran while the machine was busier: its figures are low, its ratios are not.
    for host, container, alone in ((0.32, 0.30, 0.32), (0.11, 0.10, 0.11), (0.35, 0.28, 0.35)):
        paths += [_path("overlay host", host), _path("overlay container", container, "test1"),
                  _path("wireguard-go alone", alone)]
    cases, empty = perf_report.build({"cases": [_case(paths)]})
    assert empty == []
    rows = dict((row["path"], row) for row in cases[0]["rows"])
    assert list(rows) == ["underlay", "overlay host", "overlay container", "wireguard-go alone"]
    container = rows["overlay container"]["throughput"][1]
    assert container["gbps"] == 0.28 and container["rounds"] == [0.30, 0.10, 0.28]
    assert rows["wireguard-go alone"]["throughput"][1]["rounds"] == [0.32, 0.11, 0.35]
    lines = perf_report.against_wireguard_go(cases).split("\n")
    # Ratios 0.94, 0.91, 0.80: the median 0.91, where the medians' ratio (0.28 / 0.32) says 0.88.
    assert lines == ["MTU 1500, wireguard: container -> container / wireguard-go alone: "
                     "1: 0.91 (rounds 0.94, 0.91, 0.80)",
                     "MTU 1500, wireguard: host -> host over flannel-wg / wireguard-go alone: "
                     "1: 1.00 (rounds 1.00, 1.00, 1.00)"]


def test_container_to_container_over_wireguard_go_alone_is_the_like_for_like_baseline():
    # perf.yml's wireguard case since paths carry their port: each path's tests are matched to the
    # receiver's server on that port, so the two container paths' servers (test2's, the baseline
    # container's) each give their own CPU figures.
    ports = {"underlay": 5201, "overlay host": 5201, "overlay container": 5202, "wireguard-go alone": 5201,
             "wireguard-go alone container": 5203}
    containers = {"overlay container": "test1", "wireguard-go alone container": "netlab-perf-wg-alone"}
    paths = [_path("underlay", 10.0)]
    for host, container, alone, alone_container in ((0.38, 0.34, 0.39, 0.35), (0.20, 0.17, 0.20, 0.18),
                                                    (0.37, 0.33, 0.38, 0.33)):
        paths += [_path("overlay host", host), _path("overlay container", container, "test1"),
                  _path("wireguard-go alone", alone), _path("wireguard-go alone container", alone_container,
                                                            "netlab-perf-wg-alone")]
    for path in paths:
        path["port"] = ports[path["name"]]
    case = _case(paths)
    receiver_cpu = {5201: 50.0, 5202: 60.0, 5203: 70.0}
    case["server"]["servers"] = [
        {"port": port, "container": containers.get(name),
         "tests": [{"rc": 0, "cpu": {"host_percent": receiver_cpu[port]}} for path in paths if path["port"] == port]}
        for name, port in (("underlay", 5201), ("overlay container", 5202), ("wireguard-go alone container", 5203))]
    cases, empty = perf_report.build({"cases": [case]})
    assert empty == []
    rows = dict((row["path"], row) for row in cases[0]["rows"])
    assert list(rows) == ["underlay", "overlay host", "overlay container", "wireguard-go alone",
                          "wireguard-go alone container"]
    assert dict((path, row["throughput"][1]["receiver_cpu"]) for path, row in rows.items()) == {
        "underlay": 50.0, "overlay host": 50.0, "overlay container": 60.0, "wireguard-go alone": 50.0,
        "wireguard-go alone container": 70.0}
    assert perf_report.against_wireguard_go(cases).split("\n") == [
        "MTU 1500, wireguard: container -> container / wireguard-go alone: 1: 0.87 (rounds 0.87, 0.85, 0.87)",
        "MTU 1500, wireguard: host -> host over flannel-wg / wireguard-go alone: 1: 0.97 (rounds 0.97, 1.00, 0.97)",
        "MTU 1500, wireguard: container -> container over flannel-wg / over wireguard-go alone: "
        "1: 0.97 (rounds 0.97, 0.94, 1.00)",
        "MTU 1500, wireguard: wireguard-go alone, container -> container / host -> host: "
        "1: 0.90 (rounds 0.90, 0.90, 0.87)"]


def test_a_single_round_reads_as_before():
    paths = [_path("underlay", 10.0), _path("overlay host", 0.30), _path("overlay container", 0.12, "test1"),
             _path("wireguard-go alone", 0.19)]
    cases, empty = perf_report.build({"cases": [_case(paths)]})
    assert empty == []
    assert [row["path"] for row in cases[0]["rows"]] == [
        "underlay", "overlay host", "overlay container", "wireguard-go alone"]
    assert "rounds" not in cases[0]["rows"][2]["throughput"][1]
    assert perf_report.against_wireguard_go(cases).split("\n") == [
        "MTU 1500, wireguard: container -> container / wireguard-go alone: 1: 0.63",
        "MTU 1500, wireguard: host -> host over flannel-wg / wireguard-go alone: 1: 1.58"]


def test_a_dual_stack_case_gives_ipv6_over_ipv4_container_to_container_as_the_median_of_the_rounds():
    paths = [_path("underlay", 10.0)]
    for four, six in ((4.0, 3.8), (2.0, 1.6), (4.2, 4.0)):  # round 2 under a heavier load
        paths += [_path("overlay container", four, "test1", p50=0.20),
                  _path("overlay container IPv6", six, "test1", p50=0.22)]
    case = dict(_case(paths), backend="vxlan", variant="IPv6", label="vxlan (IPv6)")
    cases, empty = perf_report.build({"cases": [case]})
    assert empty == []
    assert [row["path"] for row in cases[0]["rows"]] == ["underlay", "overlay container", "overlay container IPv6"]
    # Ratios 0.95, 0.80, 0.95: the median 0.95.
    assert perf_report.ipv6_against_ipv4(cases) == (
        "MTU 1500, vxlan (IPv6): IPv6 / IPv4 container -> container: 1: 0.95 (rounds 0.95, 0.80, 0.95); "
        "p50 latency IPv6 / IPv4: 1.10")
    assert perf_report.ipv6_against_ipv4(perf_report.build({"cases": [_case(paths[:2])]})[0]) == ""  # IPv4 only
