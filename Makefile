# netlab.flannel — one entry point for the lab, the agent, the tests and the benchmarks.
# Run as root on Debian 12/13: every target installs what it needs first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
AGENT_SOURCES := $(shell find plugins/module_utils/flannel -name '*.py') tools/build_agent.py

.PHONY: perf test-reliability help venv prereqs agent lab-prereqs lab lab-nodes lab-destroy test test-python lint sanity test-lab bench-agent bench-udp bench-memory clean

help:
	@echo "make lab          bring up the two-node lab and provision it (prints the verify table);"
	@echo "                  NODES=N for N nodes (ETCD_MEMBERS=M of them etcd members, odd, default 3)"
	@echo "make test-lab     the Molecule scenarios (NODES=N: the default one on N nodes; tls on a second lab)"
	@echo "make test         run every test: lint, sanity, unit, etcd, agent (namespaces) beside the lab's"
	@echo "                  Molecule and integration tests; TIERS='unit etcd' runs some (build/test/)"
	@echo "make agent        build build/flanneld.pyz"
	@echo "make bench-agent  print the agent benchmarks (see BENCHMARKS.md)"
	@echo "make bench-udp    udp backend throughput and latency, ours beside upstream's C proxy"
	@echo "make perf         the overlay's performance test on the lab (playbooks/perf.yml, build/perf/, ~8 min);"
	@echo "                  PERF_FULL=1: both MTUs and the variants (tutorial NAT, offload off)"
	@echo "make lab-destroy  remove every container, network and image the lab made"

$(VENV)/.installed: requirements.txt requirements-test.txt
	python3 -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv; }
	# A worktree may link .venv to another checkout's: install into that one instead.
	[ -L $(VENV) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

# Host packages for the tests (etcd for the registry/agent tests, shellcheck for sanity, tcpdump
# and iperf3 for the udp tests and benchmark, prometheus to scrape the agents, wireguard-go and
# wg for the wireguard backend's tests on kernels without the module), the lab (docker engine) and
# verify.yml's picture of the overlay (graphviz).
prereqs:
	bash lab/ensure-docker.sh
	command -v etcd >/dev/null && command -v shellcheck >/dev/null && command -v ethtool >/dev/null && \
	  command -v tcpdump >/dev/null && command -v iperf3 >/dev/null && command -v prometheus >/dev/null && \
	  command -v dot >/dev/null && command -v wireguard-go >/dev/null && command -v wg >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  etcd-server etcd-client shellcheck ethtool tcpdump iperf3 prometheus graphviz wireguard-go wireguard-tools; }

build/flanneld.pyz: $(VENV)/.installed $(AGENT_SOURCES)
	$(PY) tools/build_agent.py $@

agent: build/flanneld.pyz

# Host side of the lab: docker engine and tools, lab ssh key, busybox tarball, node image.
lab-prereqs: prereqs
	bash lab/build-images.sh

# NODES=N: an N-node lab (docker-node1..N from 192.168.205.10) from the inventory lab/inventory.sh
# writes in build/lab-N, with ETCD_MEMBERS of them etcd members (odd; default 3 from 3 nodes).
# The default, 2, is the tutorial's lab from inventories/lab.
NODES ?= 2
ETCD_MEMBERS ?=
LAB_INVENTORY = $(if $(filter-out 2,$(NODES))$(ETCD_MEMBERS),$(shell bash lab/inventory.sh '$(NODES)' '$(ETCD_MEMBERS)' || echo build/lab-invalid),inventories/lab)

lab-nodes: lab-prereqs venv
	test -d $(LAB_INVENTORY)
	$(LAB_LOCK) env NETLAB_INVENTORY=$(LAB_INVENTORY) bash lab/nodes.sh up

# Everything that touches the lab holds its lock (/tmp/netlab-lab.lock: the lab is shared).
LAB_LOCK := flock /tmp/netlab-lab.lock

lab: lab-prereqs venv agent
	test -d $(LAB_INVENTORY)
	$(LAB_LOCK) bash -c 'NETLAB_INVENTORY=$(LAB_INVENTORY) bash lab/nodes.sh up && \
	  ansible-playbook playbooks/site.yml -i $(LAB_INVENTORY) && \
	  ansible-playbook playbooks/verify.yml -i $(LAB_INVENTORY) \
	  $(if $(filter 1,$(NODES)),,&& ansible-playbook extensions/molecule/default/capture.yml -i $(LAB_INVENTORY))'

lab-destroy:
	$(LAB_LOCK) bash lab/nodes.sh destroy

test-python: prereqs venv
	$(PY) -m pytest tests/unit tests/etcd tests/agent tests/integration -q -rs

lint: venv
	ansible-lint

sanity: venv
	bash tools/run-sanity.sh

# The long reliability cases: a 60 s etcd outage and 100 agents started at once.
test-reliability: prereqs venv
	NETLAB_OUTAGE_SECONDS=60 NETLAB_MANY_AGENTS=100 $(PY) -m pytest tests/agent/test_reliability.py -q

# Each Molecule scenario under its lab's lock: the default one on the lab, the tls one beside it on
# the second lab (inventories/lab2, taken down after); a scenario's destroy keeps the node image.
# NODES=N: the default scenario on the N-node lab (the tls scenario stays on two nodes); not in
# make test, whose integration tier runs on the two-node lab the default scenario leaves.
test-lab: lab-prereqs venv agent
	test -d $(LAB_INVENTORY)
	NETLAB_INVENTORY=$(abspath $(LAB_INVENTORY)) $(PY) tools/run_tests.py molecule

# tools/run_tests.py: two lab lanes, one per lab (Molecule scenarios, then tests/integration) beside the other
# tiers (lint, sanity, each pytest directory under tests/); logs, JUnit XML and --durations in
# build/test/; one summary of tiers, counts and minutes, ending "N passed, M failed".
TIERS ?=
test: prereqs venv agent
	$(PY) tools/run_tests.py $(TIERS)

# The overlay's performance test on the lab (playbooks/perf.yml), one progress line per case.
# Default (about 8 min): at the lab's MTU, every backend with our agent and upstream flanneld's,
# in the lab's setup (NAT-free containers).
# PERF_FULL=1: the full run, at MTUs 1500 and 9000 (PERF_MTUS) and with perf_variants (the
# tutorial's NAT for both agents on VXLAN and host-gw, VXLAN with the tx checksum offload off). The lab's own config is back at the end.
# site.yml first: perf.yml starts each backend with teardown.yml, which needs a provisioned lab.
# PERF_ARGS adds ansible-playbook arguments, e.g. PERF_ARGS='-e perf_seconds=10'.
ifdef PERF_FULL
PERF_MTUS ?= 1500, 9000
PERF_SCOPE = {"perf_mtus": [$(PERF_MTUS)]}
else
PERF_MTUS ?=
PERF_SCOPE = {"perf_mtus": [$(PERF_MTUS)], "perf_variants": []}
endif
perf: lab-prereqs venv agent
	$(LAB_LOCK) bash -c 'bash lab/nodes.sh up && ansible-playbook playbooks/site.yml -i inventories/lab && \
	  ansible-playbook playbooks/perf.yml -i inventories/lab -e '\''$(PERF_SCOPE)'\'' $(PERF_ARGS)'

bench-agent: prereqs venv agent
	$(PY) tests/bench/bench_agent.py

# The agent's resident memory: per import step, and per flannel.slim step idle and with 100 peers.
bench-memory: prereqs venv
	$(PY) tests/bench/bench_memory.py

# udp backend: iperf3 container -> container, ours then upstream's C proxy (see BENCHMARKS.md).
bench-udp: prereqs venv
	$(PY) tests/bench/bench_udp.py

clean:
	rm -rf build
