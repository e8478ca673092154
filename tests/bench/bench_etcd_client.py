"""The v3 client choice: our registry on urllib3 (registry/v3.py) against etcd3gw, both through
etcd's JSON gateway, on one etcd with the v2 API off.

Prints, for each: the RSS a fresh python3 gains by importing the client (from /proc/self/status;
"urllib3" is that library alone with requests written by hand, "ours" is the whole registry with
netaddr and the lease and config code, "etcd3gw" the library alone), and the median and 95th percentile of a linearizable read and of a put
(N requests each, after 20 to warm up). Asserts nothing. etcd3gw is not a dependency of the
project: it runs from the interpreter given by --etcd3gw-python (a venv with `pip install etcd3gw`),
and its column is skipped, saying so, without one.

    .venv/bin/python tests/bench/bench_etcd_client.py --etcd3gw-python /tmp/gw/bin/python
"""

import argparse
import json
import os
import subprocess
import sys

# First: puts .collections and tests/ on sys.path, as pytest.ini does for the tests.
import benchpath
from support.etcdserver import EtcdServer

# Run in a child process: import the client, then time requests. Prints one JSON line.
CHILD = r'''
import json, sys, time
def rss():
    with open("/proc/self/status") as handle:
        return int([line for line in handle if line.startswith("VmRSS:")][0].split()[1])
kind, endpoint, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = rss()
if kind == "urllib3":  # the only library our client needs; requests made by hand
    import base64, urllib3
    http = urllib3.PoolManager()
    key = base64.b64encode(b"/bench/key").decode()
    value = base64.b64encode(b"x" * 100).decode()
    get = lambda: http.request("POST", endpoint + "/v3/kv/range", body=json.dumps({"key": key})).data
    put = lambda: http.request("POST", endpoint + "/v3/kv/put", body=json.dumps({"key": key, "value": value})).data
elif kind == "ours":
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import make_registry
    client = make_registry("v3", endpoints=endpoint)
    get = lambda: client._range("/bench/key")
    put = lambda: client._put("/bench/key", "x" * 100)
elif kind == "etcd3gw":
    import etcd3gw
    host, port = endpoint.rsplit("/", 1)[1].split(":")
    client = etcd3gw.client(host=host, port=int(port))
    get = lambda: client.get("/bench/key")
    put = lambda: client.put("/bench/key", "x" * 100)
imported = rss()
timings = {}
for name, call in (("put", put), ("get", get)):
    for _ in range(20):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    samples.sort()
    timings[name] = (samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.95)] * 1000)
print(json.dumps({"import_kib": imported - before, "rss_kib": rss(), "timings": timings}))
'''


def measure(python, kind, endpoint, count):
    # A bare interpreter's RSS, for the baseline of the same python; PYTHONPATH: the checkout as netlab.flannel.
    environment = dict(os.environ, PYTHONPATH=os.path.join(benchpath.ROOT, ".collections"))
    output = subprocess.run([python, "-c", CHILD, kind, endpoint, str(count)], env=environment,
                            stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd3gw-python", help="a python3 that can import etcd3gw")
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    server = EtcdServer(enable_v2=False).start()
    try:
        kinds = [("urllib3", sys.executable), ("ours", sys.executable)]
        if args.etcd3gw_python:
            kinds.append(("etcd3gw", args.etcd3gw_python))
        else:
            print("etcd3gw: skipped (no --etcd3gw-python)")
        print("%-8s %12s %10s %18s %18s" % ("client", "import KiB", "RSS KiB", "put ms (p50/p95)", "get ms (p50/p95)"))
        for kind, python in kinds:
            figures = measure(python, kind, server.endpoint, args.count)
            print("%-8s %12d %10d %18s %18s" % (
                kind, figures["import_kib"], figures["rss_kib"],
                "%.2f / %.2f" % tuple(figures["timings"]["put"]), "%.2f / %.2f" % tuple(figures["timings"]["get"])))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
