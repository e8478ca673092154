#!/bin/sh
# Build a root filesystem tarball for a minimal busybox container image from the local
# busybox-static binary, so test containers need no image registry.
# Usage: netlab-busybox-tar.sh OUTPUT.tar [BUSYBOX_BINARY]
# Import it with: docker import -c 'CMD ["sh"]' OUTPUT.tar busybox:latest
set -eu
out=$1
bin=${2:-/bin/busybox}
# Only a static binary works inside an image that has no libc.
if ! "$bin" --list >/dev/null 2>&1 || ldd "$bin" >/dev/null 2>&1; then
  echo "$bin is not a static busybox (install busybox-static)" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/root"
cp "$bin" "$root/bin/busybox"
for applet in $("$bin" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
# Fixed owner and mtime: the same binary gives the same tarball.
tar -C "$root" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf "$out.tmp" .
mv "$out.tmp" "$out"
