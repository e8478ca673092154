#!/usr/bin/env bash
# ansible-test insists on running from .../ansible_collections/<namespace>/<name>/: copy the
# tracked files of this checkout into such a tree in a temp dir and run the sanity tests there.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/netlab/flannel"
mkdir -p "$dest"
(cd "$repo" && git ls-files -co --exclude-standard -z | grep -zv '^\.collections/' \
  | xargs -0 cp --parents -t "$dest")
cd "$dest"
git init -q && git add -A >/dev/null
"$repo/.venv/bin/ansible-test" sanity --local --python "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  --color no "$@"
