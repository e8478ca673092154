# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts
# Shared settings for the lab scripts (sourced, not run).
# The lab is two or more systemd "nodes" (docker containers) on one docker network that
# reproduces the tutorial's 192.168.205.0/24 host-only network.
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$LAB_DIR")
CACHE_DIR="$LAB_DIR/.cache"
SSH_KEY="$LAB_DIR/.ssh/id_ed25519"
# Suite of the node image = the host's own Debian release (the host's mirror serves it).
# NETLAB_CODENAME overrides it, e.g. to try trixie nodes on a bookworm host.
HOST_CODENAME=$(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release)
CODENAME=${NETLAB_CODENAME:-$HOST_CODENAME}
NODE_IMAGE="netlab/node:$CODENAME"
LAB_NETWORK=netlab
LAB_SUBNET=192.168.205.0/24
# The lab network's IPv6 prefix: a ULA /64 of the project's own (fd00::/8 with a fixed random-looking
# global ID, subnet 205), the IPv6 underlay of dual-stack configs (flannel-v6.<VNI>, host-gw's IPv6
# routes). A node's IPv6 address is the prefix with its IPv4 address's last number: .10 -> ::10.
LAB_SUBNET6=fd6c:ab5e:2050:205::/64

lab_ipv6() {  # IPv4 address on LAB_SUBNET -> the node's IPv6 address on LAB_SUBNET6
  echo "${LAB_SUBNET6%/64}${1##*.}"
}
# Inventory the nodes come from (NETLAB_INVENTORY overrides it).
LAB_INVENTORY=${NETLAB_INVENTORY:-$REPO_DIR/inventories/lab}
