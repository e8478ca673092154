#!/usr/bin/env bash
# Print the `docker run` options of a lab node, one argument per line. This is the one place
# they are kept: nodes.sh and the Vagrantfile's docker provider (create_args) both read it.
set -euo pipefail
# shellcheck source=lab/common.sh source-path=SCRIPTDIR/..
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# systemd as PID 1 needs the cgroup tree and writable /run; flannel's VXLAN needs no device,
# but a TUN-based backend would, so /dev/net/tun is passed too.
# SIGRTMIN+3 asks systemd for a clean shutdown on `docker stop` (SIGTERM only re-executes it).
cat <<'OPTS'
--cgroupns=host
--volume=/sys/fs/cgroup:/sys/fs/cgroup:rw
--tmpfs=/run
--tmpfs=/run/lock
--device=/dev/net/tun
--stop-signal=SIGRTMIN+3
OPTS

# Nodes run dockerd, iptables and VXLAN links: they need (nearly) all privileges.
# `--privileged` fails where the engine lacks CAP_SYS_RESOURCE in its bounding set
# ("unable to apply caps"); there, grant every capability but that one, explicitly.
if docker run --rm --privileged --network=none --entrypoint=/bin/true "$NODE_IMAGE" >/dev/null 2>&1; then
  echo --privileged
else
  cat <<'OPTS'
--cap-add=ALL
--cap-drop=SYS_RESOURCE
--security-opt=seccomp=unconfined
--security-opt=apparmor=unconfined
--security-opt=systempaths=unconfined
OPTS
fi
