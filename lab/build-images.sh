#!/usr/bin/env bash
# Build the lab's images locally (no registry is reachable):
#  - lab/.ssh/id_ed25519: the lab ssh key (Ansible and Vagrant log in with it as "vagrant");
#  - lab/.cache/busybox.tar: busybox rootfs for test containers, baked into the node image;
#  - netlab/node:<codename>: a systemd Debian node, debootstrapped from the host's mirror.
# Idempotent: the image is rebuilt only when missing or built from another key or package set.
set -euo pipefail
# shellcheck source=lab/common.sh source-path=SCRIPTDIR/..
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mkdir -p "$CACHE_DIR" "$(dirname "$SSH_KEY")"
# One build at a time (Vagrant's docker provider brings machines up in parallel).
exec 9>"$CACHE_DIR/.lock"
flock 9
chmod 700 "$(dirname "$SSH_KEY")"
[ -f "$SSH_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C netlab-lab -f "$SSH_KEY"
key_id=$(sha256sum "$SSH_KEY.pub" | cut -c1-16)

# The host's own Debian mirror: first URI of a deb source carrying the host's bare codename suite.
mirror=$(awk -v s="$HOST_CODENAME" '
  /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s && !m) m=u} /^$/ {u=""}
  END {print m}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk -v s="$HOST_CODENAME" '$1=="deb" && $0 !~ /\[/ && $3==s {print $2; exit}' \
  /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "build-images: no Debian mirror for $HOST_CODENAME in apt sources" >&2; exit 1; }

# Base packages for a systemd+sshd node, plus what the roles install on real hosts
# (docker.io, etcd, busybox-static, ...) and python3-apt for ansible.builtin.apt: baked in so CI does not depend on the mirror twice.
packages=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,iptables,procps,ca-certificates,openssh-server,sudo
packages+=,docker.io,etcd-server,etcd-client,busybox-static,tcpdump,python3-etcd,python3-pyroute2,python3-netaddr
# wireguard-go: the wireguard backend on kernels without the module (this lab's host has none).
packages+=,wireguard-go
# Since Debian 13 the docker CLI is its own package (only recommended by docker.io).
[ "$CODENAME" = bookworm ] || packages+=,docker-cli

rootfs_tar="$CACHE_DIR/rootfs-$CODENAME.tar"
stamp=$(echo "$mirror $packages" | sha256sum | cut -c1-16)
# The image label records what it was built from: key, mirror and package set.
build_id="$key_id-$stamp"
if [ "$(docker image inspect -f '{{index .Config.Labels "netlab.build"}}' "$NODE_IMAGE" 2>/dev/null)" = "$build_id" ]; then
  echo "build-images: $NODE_IMAGE is up to date"
  exit 0
fi

"$REPO_DIR/roles/docker/files/netlab-busybox-tar.sh" "$CACHE_DIR/busybox.tar"
root=$(mktemp -d /var/tmp/netlab-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
if [ "$(cat "$rootfs_tar.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "build-images: debootstrap $CODENAME from $mirror"
  debootstrap --variant=minbase --include="$packages" "$CODENAME" "$root" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
  # Package lists stay: apt in the roles can then skip a fresh update (cache_valid_time).
  rm -rf "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -cf "$rootfs_tar" .
  echo "$stamp" > "$rootfs_tar.stamp"
else
  echo "build-images: reusing $rootfs_tar"
  tar -C "$root" --numeric-owner -xf "$rootfs_tar"
fi

# Node customisation, done in the chroot without starting anything.
chroot "$root" /bin/sh -eu <<'CHROOT'
id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/vagrant
chmod 440 /etc/sudoers.d/vagrant
# The roles enable these; a fresh node must look like a host where they were just installed.
systemctl disable etcd.service docker.service docker.socket >/dev/null 2>&1 || true
systemctl enable ssh.service >/dev/null
# Each container gets its own machine id at first boot.
: > /etc/machine-id
CHROOT
install -d -m 700 "$root/home/vagrant/.ssh"
install -m 600 "$SSH_KEY.pub" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
install -D -m 644 "$CACHE_DIR/busybox.tar" "$root/usr/local/share/netlab/busybox.tar"

tar -C "$root" --numeric-owner -c . | docker import \
  -c 'CMD ["/sbin/init"]' -c "LABEL netlab.build=$build_id" \
  - "$NODE_IMAGE" >/dev/null
echo "build-images: built $NODE_IMAGE"
