"""The table and chart of playbooks/perf.yml, from its raw figures (perf.json).

  python3 perf_report.py PERF_JSON

Prints the table and writes table.txt, perf.png (when matplotlib is importable) and
summary.json beside PERF_JSON. Each throughput and latency figure is also given as a ratio to
the underlay path measured in the same case (same bring-up, minutes apart), and our agent's
figures as a ratio to upstream flanneld's where the same backend and MTU ran with both.
Exit status 3 (after writing everything) when a path carried no traffic or a case failed.
"""

import json
import os
import sys

PATHS = ("underlay", "overlay host", "overlay container", "wireguard-go alone", "wireguard-go alone container",
         "overlay container IPv6")


def summarize(case):
    """One row per path: Gbit/s and CPU per stream count, latency."""
    # Each path's tests were served, in order, by the receiver's server on the path's port (a
    # perf.json from before paths had ports: the host's server or the container's).
    by_port = all("port" in path for path in case["client"]["paths"])
    server_tests = {}
    for server in case["server"]["servers"]:
        server_tests[int(server["port"]) if by_port else server["container"] is not None] = list(server["tests"])
    rows = []
    for path in case["client"]["paths"]:
        served_by = int(path["port"]) if by_port else path["container"] is not None
        row = {"path": path["name"], "throughput": {}, "latency": path["latency"], "errors": []}
        for test in path["throughput"]:
            received = server_tests.get(served_by, [])
            server = received.pop(0) if received else {}
            row["throughput"][test["streams"]] = {
                "gbps": test["received_bps"] / 1e9, "retransmits": test.get("retransmits"),
                "sender_cpu": test["cpu"]["host_percent"],
                "receiver_cpu": (server.get("cpu") or {}).get("host_percent"),
                "machine_busy": test["cpu"]["machine_busy_percent"],
                "machine_softirq": test["cpu"]["machine_softirq_percent"]}
            if test.get("error"):
                row["errors"].append("%d stream(s): %s" % (test["streams"], test["error"]))
        if not path["latency"]["received"]:
            row["errors"].append("ping: %s" % path["latency"]["error"])
        rows.append(row)
    return rows


def median(values):
    ordered = sorted(value for value in values if value is not None)
    return ordered[len(ordered) // 2] if ordered else None


def merge_rounds(rows):
    """One row per path: a path measured in several rounds (the wireguard case alternates its
    two compared paths) keeps, per stream count, the round of median Gbit/s with that round's CPU,
    and every round's Gbit/s in `rounds`; the latency of the round of median p50."""
    by_path = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    merged = []
    for path, measured in by_path.items():
        if len(measured) == 1:
            merged.append(measured[0])
            continue
        row = {"path": path, "throughput": {}, "errors": [error for one in measured for error in one["errors"]],
               "latency": sorted((one["latency"] for one in measured),
                                 key=lambda latency: (latency["p50_ms"] is None, latency["p50_ms"]))[len(measured) // 2]}
        for streams in measured[0]["throughput"]:
            figures = [one["throughput"][streams] for one in measured if streams in one["throughput"]]
            chosen = dict(sorted(figures, key=lambda figure: figure["gbps"])[len(figures) // 2])
            chosen["rounds"] = [figure["gbps"] for figure in figures]
            row["throughput"][streams] = chosen
        merged.append(row)
    return merged


def ratio(value, reference):
    return value / reference if value is not None and reference else None


def fmt(value, spec="%.2f"):
    return "-" if value is None else spec % value


def build(raw):
    cases, empty = [], []
    for case in raw["cases"]:
        rows = merge_rounds(summarize(case))
        underlay = next((row for row in rows if row["path"] == "underlay"), None)
        for row in rows:
            for streams, figure in row["throughput"].items():
                figure["ratio"] = ratio(figure["gbps"], underlay["throughput"].get(streams, {}).get("gbps"))
            row["p50_ratio"] = ratio(row["latency"]["p50_ms"], underlay["latency"]["p50_ms"])
            if row["errors"] or any(figure["gbps"] <= 0 for figure in row["throughput"].values()):
                empty.append("MTU %s, %s, %s: %s" % (case["mtu"], case["label"], row["path"],
                                                     "; ".join(row["errors"]) or "0 bit/s"))
        cases.append({"mtu": case["mtu"], "backend": case["backend"], "agent": case["agent"],
                      "variant": case["variant"], "label": case["label"],
                      "flannel_mtu": case["sender_info"].get("flannel_mtu"), "rows": rows,
                      "idle_cpu": {"sender": case["client"]["idle_cpu"]["host_percent"],
                                   "receiver": case["server"]["idle_cpu"]["host_percent"]},
                      "cpu_source": case["client"]["cpu_source"]})
    # Ours against upstream: the same backend, MTU, variant (or none) and path.
    upstream = {(c["mtu"], c["backend"], c["variant"], row["path"]): row
                for c in cases if c["agent"] == "upstream" for row in c["rows"]}
    for case in cases:
        if case["agent"] != "ours":
            continue
        for row in case["rows"]:
            theirs = upstream.get((case["mtu"], case["backend"], case["variant"], row["path"]))
            if theirs:
                row["ours_vs_upstream"] = {
                    streams: ratio(figure["gbps"], theirs["throughput"].get(streams, {}).get("gbps"))
                    for streams, figure in row["throughput"].items()}
    return cases, empty


def against_variants(cases):
    """Our plain run (the inventory's setup) against each variant's run of either agent on the same
    backend and MTU, container -> container: e.g. NAT-free ours against the tutorial's NAT upstream."""
    lines = []
    plain = {(c["mtu"], c["backend"]): c for c in cases if c["agent"] == "ours" and not c["variant"]}
    for case in cases:
        ours = plain.get((case["mtu"], case["backend"]))
        if not case["variant"] or ours is None:
            continue
        mine = next(row for row in ours["rows"] if row["path"] == "overlay container")
        theirs = next(row for row in case["rows"] if row["path"] == "overlay container")
        lines.append("MTU %s, %s: ours (plain) / %s (%s), container -> container: %s" % (
            case["mtu"], case["backend"], case["agent"], case["variant"], " / ".join(
                "%d: %s" % (s, fmt(ratio(f["gbps"], theirs["throughput"].get(s, {}).get("gbps"))))
                for s, f in sorted(mine["throughput"].items()))))
    return "\n".join(lines)


def round_ratios(row, baseline):
    """Per stream count, `row`'s throughput over `baseline`'s measured in the same alternated rounds:
    the median of the rounds' ratios, then each round's ("1: 0.96 (rounds 0.92, 0.96, 1.26) / 4: ...")."""
    figures = []
    for streams, figure in sorted(row["throughput"].items()):
        theirs = baseline["throughput"].get(streams, {})
        rounds = zip(figure.get("rounds", [figure["gbps"]]), theirs.get("rounds", [theirs.get("gbps")]))
        ratios = [ratio(mine, base) for mine, base in rounds]
        figures.append("%d: %s%s" % (streams, fmt(median(ratios)), " (rounds %s)" % ", ".join(
            fmt(value) for value in ratios) if len(ratios) > 1 else ""))
    return " / ".join(figures)


def against_wireguard_go(cases):
    """The wireguard backend against wireguard-go alone between the same hosts in the same case:
    container -> container over the agent's flannel-wg (the issue's goal) and host -> host over it
    (the same path as the baseline's, through the agent's device instead of a hand-made one), each
    over host -> host through a tunnel of its own; and, like for like, container -> container over
    flannel-wg against container -> container through that tunnel (two containers beside the test
    containers, in the same Docker subnets), and the containers' own hop: container -> container
    through that tunnel over host -> host through it. Measured in alternated rounds: the median of
    the rounds' ratios (each round's figures were taken a minute apart at most, under the same
    load), with each round's ratio."""
    lines = []
    for case in cases:
        rows = dict((row["path"], row) for row in case["rows"])
        for path, baseline, label in (
                ("overlay container", "wireguard-go alone", "container -> container / wireguard-go alone"),
                ("overlay host", "wireguard-go alone", "host -> host over flannel-wg / wireguard-go alone"),
                ("overlay container", "wireguard-go alone container",
                 "container -> container over flannel-wg / over wireguard-go alone"),
                ("wireguard-go alone container", "wireguard-go alone",
                 "wireguard-go alone, container -> container / host -> host")):
            if path in rows and baseline in rows:
                lines.append("MTU %s, %s: %s: %s" % (case["mtu"], case["label"], label,
                                                     round_ratios(rows[path], rows[baseline])))
    return "\n".join(lines)


def ipv6_against_ipv4(cases):
    """A dual-stack case's IPv6 container -> container against its IPv4 container -> container,
    measured in alternated rounds in the same case: the median of the rounds' ratios, with each."""
    lines = []
    for case in cases:
        ipv6 = next((row for row in case["rows"] if row["path"] == "overlay container IPv6"), None)
        ipv4 = next((row for row in case["rows"] if row["path"] == "overlay container"), None)
        if ipv6 is None or ipv4 is None:
            continue
        lines.append("MTU %s, %s: IPv6 / IPv4 container -> container: %s; p50 latency IPv6 / IPv4: %s" % (
            case["mtu"], case["label"], round_ratios(ipv6, ipv4),
            fmt(ratio(ipv6["latency"]["p50_ms"], ipv4["latency"]["p50_ms"]))))
    return "\n".join(lines)


def table(cases):
    streams = sorted({s for case in cases for row in case["rows"] for s in row["throughput"]})
    has_upstream = any(case["agent"] == "upstream" for case in cases)
    head = ["MTU", "case", "agent", "path"]
    for count in streams:
        head += ["%d-stream Gbit/s" % count, "x underlay", "CPU send/recv %"]
    head += ["p50 ms", "p99 ms", "p50 x underlay"]
    if has_upstream:
        head += ["ours/upstream " + "/".join(str(s) for s in streams)]
    lines = [head]
    for case in cases:
        for row in case["rows"]:
            line = [str(case["mtu"]), case["backend"] + (" (%s)" % case["variant"] if case["variant"] else ""),
                    case["agent"], row["path"]]
            for count in streams:
                figure = row["throughput"].get(count)
                if figure is None:
                    line += ["-", "-", "-"]
                    continue
                line += [fmt(figure["gbps"]), fmt(figure["ratio"]),
                         "%s/%s" % (fmt(figure["sender_cpu"], "%.0f"), fmt(figure["receiver_cpu"], "%.0f"))]
            line += [fmt(row["latency"]["p50_ms"], "%.3f"), fmt(row["latency"]["p99_ms"], "%.3f"),
                     fmt(row["p50_ratio"])]
            if has_upstream:
                versus = row.get("ours_vs_upstream")
                line += ["/".join(fmt(versus.get(s)) for s in streams) if versus else ""]
            lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def chart(cases, path):
    """One panel per MTU: per backend (or variant) and path, a bar per stream count for our agent
    and, beside it (hatched), for upstream's."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install -r requirements-test.txt)"
    mtus = sorted({case["mtu"] for case in cases})
    streams = sorted({s for case in cases for row in case["rows"] for s in row["throughput"]})
    agents = [agent for agent in ("ours", "upstream") if any(case["agent"] == agent for case in cases)]
    series = [(agent, count) for agent in agents for count in streams]
    figure, axes = plt.subplots(len(mtus), 1, figsize=(16, 5.5 * len(mtus)), squeeze=False)
    for axis, mtu in zip(axes[:, 0], mtus):
        groups = []
        for case in cases:
            if case["mtu"] == mtu and case["agent"] == "ours":
                name = case["backend"] + (" (%s)" % case["variant"] if case["variant"] else "")
                groups += [(name, case["backend"], case["variant"], row["path"]) for row in case["rows"]]

        def gbps(agent, count, backend, variant, path_name):
            for case in cases:
                if (case["mtu"], case["agent"], case["backend"], case["variant"]) == (mtu, agent, backend, variant):
                    for row in case["rows"]:
                        if row["path"] == path_name:
                            return row["throughput"].get(count, {}).get("gbps", 0)
            return 0

        width = 0.8 / len(series)
        for index, (agent, count) in enumerate(series):
            positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(groups))]
            values = [gbps(agent, count, group[1], group[2], group[3]) for group in groups]
            axis.bar(positions, values, width, hatch="//" if agent == "upstream" else None,
                     color="C%d" % streams.index(count), edgecolor="black" if agent == "upstream" else None,
                     label="%s, %d stream%s" % ("our agent" if agent == "ours" else "upstream flanneld", count,
                                                "s" if count > 1 else ""))
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels(["%s\n%s" % (group[0], group[3]) for group in groups], fontsize=7)
        axis.set_ylabel("TCP Gbit/s (iperf3)")
        axis.set_title("lab network MTU %s" % mtu)
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return "chart: " + path


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__)
    raw_path = argv[1]
    out_dir = os.path.dirname(os.path.abspath(raw_path))
    with open(raw_path) as handle:
        raw = json.load(handle)
    cases, empty = build(raw)
    text = table(cases)
    with open(os.path.join(out_dir, "table.txt"), "w") as handle:
        handle.write(text + "\n")
    with open(os.path.join(out_dir, "summary.json"), "w") as handle:
        json.dump({"date": raw.get("date"), "cases": cases, "no_traffic": empty}, handle, indent=1)
    print(text)
    versus = "\n".join(text for text in (against_variants(cases), against_wireguard_go(cases), ipv6_against_ipv4(cases))
                       if text)
    if versus:
        print(versus)
        with open(os.path.join(out_dir, "table.txt"), "a") as handle:
            handle.write(versus + "\n")
    if cases:
        print("CPU: %% of one core, node's %s; idle (sender/receiver): %s" % (
            cases[0]["cpu_source"].split()[0],
            ", ".join("%s/%s" % (fmt(c["idle_cpu"]["sender"], "%.0f"), fmt(c["idle_cpu"]["receiver"], "%.0f"))
                      for c in cases)))
        busy = sorted(figure["machine_busy"] for case in cases for row in case["rows"]
                      for figure in row["throughput"].values())
        print("whole machine during the iperf3 runs (all its work, other users' too): median %.0f %% busy "
              "(100 %% = one core; this controller has %d)" % (busy[len(busy) // 2], os.cpu_count()))
    print(chart(cases, os.path.join(out_dir, "perf.png")))
    print("raw figures: %s" % raw_path)
    failures = ["MTU %s, %s (%s, %s): %s" % (f["mtu"], f["label"], f["host"], f["task"], " ".join(f["error"].split())[-600:])
                for f in raw.get("failures", [])]
    if failures:
        sys.stderr.write("cases that failed:\n  " + "\n  ".join(failures) + "\n")
    if empty:
        sys.stderr.write("paths that carried no traffic:\n  " + "\n  ".join(empty) + "\n")
    if empty or failures:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
