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
# ansible-test bootstraps pip in its venvs with a script from a host this machine cannot reach;
# this stand-in does the same job with the interpreter's ensurepip and then pip from PyPI.
pip_version=$("$repo/.venv/bin/python" - <<'PY'
import re, ansible_test, pathlib
text = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", text).group(1))
PY
)
bootstrap="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -s "$bootstrap" ]; then
  mkdir -p "$(dirname "$bootstrap")"
  cat > "$bootstrap" <<'PY'
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
# --no-setuptools/--no-wheel are get-pip's own options, not pip's.
options = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + options)
PY
fi
cd "$dest"
git init -q && git add -A >/dev/null
"$repo/.venv/bin/ansible-test" sanity --local --python "$("$repo/.venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  --color no "$@"
