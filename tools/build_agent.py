"""Build build/flanneld.pyz: the agent core plus its pure-Python dependencies in one zipapp.

The dependencies are copied from the Python environment running this script (the project's
venv or the controller's), so the build needs no network. Run: python3 tools/build_agent.py [OUT]
"""

import compileall
import importlib
import os
import shutil
import sys
import tempfile
import zipapp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "plugins", "module_utils", "flannel")
# Import names of the agent's runtime dependencies (python-etcd needs urllib3 and dnspython;
# prometheus_client serves /metrics).
DEPENDENCIES = ("etcd", "netaddr", "pyroute2", "urllib3", "dns", "prometheus_client")
# The narrower import path (flannel/slim.py) first, before any library is imported.
MAIN = "import sys\nimport flannel.slim\nflannel.slim.apply()\nfrom flannel.cli import main\nsys.exit(main())\n"


def _package_dir(name):
    try:
        module = importlib.import_module(name)
    except ImportError:
        sys.exit("build_agent: Python package %r is missing: pip install -r requirements.txt" % name)
    return os.path.dirname(module.__file__)


def build(output):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    with tempfile.TemporaryDirectory() as staging:
        shutil.copytree(CORE, os.path.join(staging, "flannel"), ignore=ignore)
        for name in DEPENDENCIES:
            shutil.copytree(_package_dir(name), os.path.join(staging, name), ignore=ignore)
        with open(os.path.join(staging, "__main__.py"), "w") as handle:
            handle.write(MAIN)
        # zipimport cannot cache bytecode, so ship it: without it every start compiles ~300
        # modules (about a second of CPU). Another Python version just compiles the sources.
        compileall.compile_dir(staging, legacy=True, quiet=1, optimize=0)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        temporary = output + ".tmp"
        zipapp.create_archive(staging, temporary, interpreter="/usr/bin/env python3", compressed=True)
        os.replace(temporary, output)
    return output


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "flanneld.pyz")))
