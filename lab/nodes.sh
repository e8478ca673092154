#!/usr/bin/env bash
# Lab nodes as systemd containers on the docker network "netlab" (192.168.205.0/24 and the IPv6
# prefix LAB_SUBNET6 of common.sh; a node at 192.168.205.N has LAB_SUBNET6's ::N too).
#   nodes.sh up       create (or reuse) the network and one container per inventory node,
#                     remove the lab's nodes the inventory no longer has, then wait for systemd
#                     and sshd
#   nodes.sh down     remove the nodes, and the network when no node of any lab is left on it
#   nodes.sh destroy  down, then remove the node image too (make lab-destroy)
#   nodes.sh status   show the nodes
#   nodes.sh mtu N    set the lab network's MTU to N on the running lab (the bridge and both ends of
#                     every node's link); prints a line only when it changes
# Nodes and addresses come from inventories/lab (hosts with netlab_lab_address), or $NETLAB_INVENTORY
# (e.g. an N-node lab's from lab/inventory.sh N);
# the network's MTU from its netlab_lab_mtu (default 1500), which `up` applies.
# Several labs (instances) share the network: an inventory's netlab_lab_instance names its lab
# (default "lab", the one `make lab` brings up; the test suite's second lab is inventories/lab2's).
# Each lab's nodes carry its own label, so up, down, status and mtu act on that lab's nodes only.
set -euo pipefail
# shellcheck source=lab/common.sh source-path=SCRIPTDIR/..
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The inventory's hosts, read once: ansible-inventory --list's JSON.
inventory_json() {
  local inv=ansible-inventory
  [ -x "$REPO_DIR/.venv/bin/ansible-inventory" ] && inv="$REPO_DIR/.venv/bin/ansible-inventory"
  [ -n "${INVENTORY_JSON:-}" ] || INVENTORY_JSON=$(cd "$REPO_DIR" && "$inv" -i "$LAB_INVENTORY" --list)
}

# A lab setting: the variable $1 of the inventory's first node ($2 when unset or no node).
inventory_setting() {  # variable default
  inventory_json
  python3 -c '
import json, sys
hostvars = json.loads(sys.argv[1])["_meta"]["hostvars"]
nodes = [name for name in sorted(hostvars) if hostvars[name].get("netlab_lab_address")]
print(hostvars[nodes[0]].get(sys.argv[2], sys.argv[3]) if nodes else sys.argv[3])' "$INVENTORY_JSON" "$1" "$2"
}

inventory_nodes() {
  inventory_json
  python3 -c '
import json, sys
hostvars = json.loads(sys.argv[1])["_meta"]["hostvars"]
for name in sorted(hostvars):
    if hostvars[name].get("netlab_lab_address"):
        print(name, hostvars[name]["netlab_lab_address"])' "$INVENTORY_JSON"
}

# The lab's MTU: netlab_lab_mtu (default 1500).
inventory_mtu() {
  inventory_setting netlab_lab_mtu 1500
}

# The network with both prefixes. One from before the lab had IPv6 (or with IPv6 off) is made
# again with its nodes: docker cannot add a subnet to a network, and `up` re-creates the nodes
# (site.yml then provisions them as it would new ones).
# The labs share the network: making it, removing it and attaching or detaching nodes hold this lock
# (two labs' `up` at once both found no network and both created one: "Pool overlaps").
NETWORK_LOCK=/tmp/netlab-network.lock
lock_network() { exec 8>"$NETWORK_LOCK" && flock 8; }
unlock_network() { flock -u 8 && exec 8>&-; }

# The caller holds the network lock.
ensure_network() {
  local subnets ipv6
  if subnets=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$LAB_NETWORK" 2>/dev/null); then
    [[ " $subnets" == *" $LAB_SUBNET "* ]] \
      || { echo "nodes: network $LAB_NETWORK has subnet(s) $subnets, want $LAB_SUBNET" >&2; exit 1; }
    ipv6=$(docker network inspect -f '{{.EnableIPv6}}' "$LAB_NETWORK")
    [[ $ipv6 == true && " $subnets" == *" $LAB_SUBNET6 "* ]] && return
    echo "nodes: network $LAB_NETWORK has no IPv6 prefix $LAB_SUBNET6 (subnets $subnets): making it again"
    remove_nodes_and_empty_network
    ! docker network inspect "$LAB_NETWORK" >/dev/null 2>&1 \
      || { echo "nodes: network $LAB_NETWORK still has another lab's nodes: take that lab down first" >&2; exit 1; }
  fi
  docker network create --ipv6 --subnet "$LAB_SUBNET" --subnet "$LAB_SUBNET6" --label netlab.lab=network \
    --opt com.docker.network.driver.mtu="$(inventory_mtu)" "$LAB_NETWORK" >/dev/null
  echo "nodes: created network $LAB_NETWORK ($LAB_SUBNET, $LAB_SUBNET6)"
}

wait_node() {  # name address
  local state=""
  for _ in $(seq 1 90); do
    state=$(docker exec "$1" systemctl is-system-running 2>/dev/null || true)
    case $state in running|degraded) break ;; esac
    sleep 1
  done
  case $state in
    running) ;;
    degraded) echo "nodes: $1 is degraded:" >&2; docker exec "$1" systemctl --failed --no-legend >&2 ;;
    *) echo "nodes: systemd in $1 did not come up (state '$state')" >&2; exit 1 ;;
  esac
  # The network was checked above: $2 is one of our own node addresses on it.
  for _ in $(seq 1 30); do
    if ssh -n -i "$SSH_KEY" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -o ConnectTimeout=2 "vagrant@$2" sudo -n true 2>/dev/null; then
      echo "nodes: $1 ($2) ready"
      return
    fi
    sleep 1
  done
  echo "nodes: no ssh to vagrant@$2 ($1)" >&2
  exit 1
}

up() {
  docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 || "$LAB_DIR/build-images.sh"
  lock_network
  ensure_network
  local opts nodes name addr state image
  mapfile -t opts < <("$LAB_DIR/node-options.sh")
  nodes=$(inventory_nodes)
  image=$(docker image inspect -f '{{.Id}}' "$NODE_IMAGE")
  # Nodes of a larger lab made earlier (make lab NODES=3, then NODES=2): an extra node would keep
  # its lease and stay a peer of the others.
  local existing
  for existing in $(docker ps -a --filter "label=$LABEL" --format '{{.Names}}'); do
    if ! awk -v n="$existing" '$1 == n {found = 1} END {exit !found}' <<<"$nodes"; then
      docker rm -f "$existing" >/dev/null
      echo "nodes: removed $existing (not in $LAB_INVENTORY)"
    fi
  done
  while read -r name addr; do
    state=$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null) || state=absent
    # A node from an older image (another checkout's ssh key, another package set) is replaced:
    # reusing it would leave a node this checkout cannot log in to.
    if [ "$state" != absent ] && [ "$(docker inspect -f '{{.Image}}' "$name")" != "$image" ]; then
      docker rm -f "$name" >/dev/null
      echo "nodes: removed $name (made from an older image)"
      state=absent
    fi
    case $state in
      true) ;;
      false) docker start "$name" >/dev/null && echo "nodes: started $name" ;;
      absent)
        docker run -d --name "$name" --hostname "$name" --label "$LABEL" \
          --network "$LAB_NETWORK" --ip "$addr" --ip6 "$(lab_ipv6 "$addr")" "${opts[@]}" "$NODE_IMAGE" >/dev/null
        echo "nodes: created $name ($addr, $(lab_ipv6 "$addr"))" ;;
    esac
  done <<<"$nodes"
  unlock_network
  # All nodes at once (one after the other, a 6-node lab waited a second more for nodes that were up).
  local pids=() pid failed=0
  while read -r name addr; do wait_node "$name" "$addr" & pids+=("$!"); done <<<"$nodes"
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  ((failed == 0)) || exit 1
  set_mtu "$(inventory_mtu)"
}

# The MTU of this lab's nodes, set live: each node's interface on the network and its host-side
# veth peer, then the bridge. Running agents follow it at once (flannel device MTU, FLANNEL_MTU in
# subnet.env); docker0 follows at the next site.yml run (the docker role). Another lab on the same
# network keeps its own links' MTU (the bridge forwards between ports at each port's own MTU); the
# bridge itself, which only carries the controller's own traffic to the nodes, takes the largest MTU
# of its ports, so that it never fragments what a node of either lab can take.
set_mtu() {  # mtu
  local mtu=$1 id bridge current name pid dev peer host_dev largest
  if ! [[ $mtu =~ ^[0-9]+$ ]] || ((mtu < 1280 || mtu > 65535)); then
    echo "nodes: MTU must be a number from 1280 to 65535, got '$mtu'" >&2
    exit 2
  fi
  id=$(docker network inspect -f '{{.Id}}' "$LAB_NETWORK" 2>/dev/null) \
    || { echo "nodes: no docker network $LAB_NETWORK: run nodes.sh up first" >&2; exit 1; }
  bridge=br-${id:0:12}
  current=""
  while read -r name; do
    [ -n "$name" ] || continue
    pid=$(docker inspect -f '{{.State.Pid}}' "$name")
    dev=$(nsenter -t "$pid" -n ip -o -4 addr show to "$LAB_SUBNET" | awk '{print $2; exit}')
    peer=$(nsenter -t "$pid" -n ip -o link show dev "$dev" | sed -n 's/^[0-9]*: [^@]*@if\([0-9]*\):.*/\1/p')
    host_dev=$(ip -o link show | awk -F': ' -v peer="$peer" '$1 == peer {sub(/@.*/, "", $2); print $2}')
    [ -n "$host_dev" ] || { echo "nodes: no host-side link of $name's $dev on $bridge" >&2; exit 1; }
    [ -n "$current" ] || current=$(cat "/sys/class/net/$host_dev/mtu")
    ip link set dev "$host_dev" mtu "$mtu"
    nsenter -t "$pid" -n ip link set dev "$dev" mtu "$mtu"
  done < <(docker ps --filter "label=$LABEL" --filter "network=$LAB_NETWORK" --format '{{.Names}}')
  largest=$(ip -o link show master "$bridge" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p' | sort -n | tail -n 1)
  ip link set dev "$bridge" mtu "${largest:-$mtu}"
  [ "${current:-$mtu}" = "$mtu" ] || echo "nodes: lab $INSTANCE's links on $LAB_NETWORK MTU $mtu (was $current)"
}

# The caller holds the network lock.
remove_nodes_and_empty_network() {
  local ids
  mapfile -t ids < <(docker ps -aq --filter "label=$LABEL")
  if ((${#ids[@]})); then
    docker rm -f "${ids[@]}" >/dev/null
    echo "nodes: removed ${#ids[@]} node(s)"
  fi
  # The network is shared by the labs: it goes with the last node on it.
  if docker network inspect "$LAB_NETWORK" >/dev/null 2>&1 \
      && [ "$(docker network inspect -f '{{len .Containers}}' "$LAB_NETWORK")" = 0 ]; then
    docker network rm "$LAB_NETWORK" >/dev/null
    echo "nodes: removed network $LAB_NETWORK"
  fi
}

down() {
  lock_network
  remove_nodes_and_empty_network
  unlock_network
}

inventory_json
INSTANCE=$(inventory_setting netlab_lab_instance lab)
# The main lab's nodes keep the label they always had (netlab.lab=node); another lab's carry its name.
if [ "$INSTANCE" = lab ]; then LABEL=netlab.lab=node; else LABEL=netlab.lab=node-$INSTANCE; fi

case ${1:-} in
  up) up ;;
  down) down ;;
  destroy)
    down
    if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
      docker image rm -f "$NODE_IMAGE" >/dev/null
      echo "nodes: removed image $NODE_IMAGE"
    fi ;;
  mtu) set_mtu "${2:-$(inventory_mtu)}" ;;
  status) docker ps -a --filter "label=$LABEL" --format 'table {{.Names}}\t{{.Status}}\t{{.Image}}' ;;
  *) echo "usage: $0 up|down|destroy|status|mtu [N]" >&2; exit 2 ;;
esac
