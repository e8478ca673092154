#!/usr/bin/env bash
# Make sure the host can run the lab: packages present and a docker engine answering.
# Hosts of this project have no systemd, so dockerd is started by hand when it is not running.
set -euo pipefail

need_pkgs=()
for pair in docker:docker.io dockerd:docker.io debootstrap:debootstrap ip:iproute2 \
            iptables:iptables tcpdump:tcpdump ssh:openssh-client ssh-keygen:openssh-client; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
# busybox-static: the offline test image is built from its binary (a plain busybox is dynamic).
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if ((${#need_pkgs[@]})); then
  mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
  echo "ensure-docker: installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd (log: /var/log/dockerd.log)"
  # setsid: dockerd must outlive the make/CI shell that started it.
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info >/dev/null 2>&1 || { echo "ensure-docker: dockerd did not answer in 60 s, see /var/log/dockerd.log" >&2; exit 1; }
echo "ensure-docker: docker $(docker version --format '{{.Server.Version}}') ready"
