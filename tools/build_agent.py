"""Build build/flanneld.pyz: the agent core plus its pure-Python dependencies in one zipapp.

The one builder of the zipapp (make agent, the flanneld role, the tests and the benchmarks all
run it), with one staleness rule: the zipapp is rebuilt when it is absent or was built from other
agent sources (plugins/module_utils/flannel, this script) or other library versions than the ones
installed here, which must be requirements.txt's pins. The zipapp records what it was built from
in BUILD_FINGERPRINT.

The dependencies are copied from the Python environment running this script (the project's
venv or the controller's), so the build needs no network.

Run: python3 tools/build_agent.py [--stale | --force] [OUT]
  (default)  build OUT when stale; print why it was built, or that it is up to date
  --stale    build nothing; print why OUT is stale, nothing when it is up to date
  --force    build OUT in any case
"""

import compileall
import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import zipapp
import zipfile

from importlib.metadata import PackageNotFoundError, version as installed_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "plugins", "module_utils", "flannel")
REQUIREMENTS = os.path.join(ROOT, "requirements.txt")
DEFAULT_OUTPUT = os.path.join(ROOT, "build", "flanneld.pyz")
# The agent's runtime dependencies: import name -> distribution (python-etcd needs urllib3 and
# dnspython; prometheus_client serves /metrics).
DEPENDENCIES = (("etcd", "python-etcd"), ("netaddr", "netaddr"), ("pyroute2", "pyroute2"),
                ("urllib3", "urllib3"), ("dns", "dnspython"), ("prometheus_client", "prometheus_client"))
# The narrower import path (flannel/slim.py) first, before any library is imported.
MAIN = "import sys\nimport flannel.slim\nflannel.slim.apply()\nfrom flannel.cli import main\nsys.exit(main())\n"
FINGERPRINT_NAME = "BUILD_FINGERPRINT"
_IGNORED_DIRS = ("__pycache__", "tests")


class BuildError(Exception):
    """What stops a build, as one line."""


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(requirements=REQUIREMENTS):
    """{canonical distribution name: version} of the `name==version` lines of requirements.txt."""
    pins = {}
    with open(requirements) as handle:
        for line in handle:
            match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
            if match:
                pins[_canonical(match.group(1))] = match.group(2)
    return pins


def library_versions(requirements=REQUIREMENTS):
    """{distribution: version} of the bundled libraries as installed here; a BuildError when one is
    missing or is not the version requirements.txt pins (the zipapp would bundle another one)."""
    pins = pinned_versions(requirements)
    versions = {}
    for _module, distribution in DEPENDENCIES:
        pin = pins.get(_canonical(distribution))
        if pin is None:
            raise BuildError("%s pins no version of %s, a library the agent bundles"
                             % (os.path.basename(requirements), distribution))
        try:
            versions[distribution] = installed_version(distribution)
        except PackageNotFoundError:
            raise BuildError("%s is not installed for %s; %s pins %s: pip install -r requirements.txt"
                             % (distribution, sys.executable, os.path.basename(requirements), pin))
        if versions[distribution] != pin:
            raise BuildError("%s %s is installed for %s, but %s pins %s: pip install -r requirements.txt"
                             % (distribution, versions[distribution], sys.executable,
                                os.path.basename(requirements), pin))
    return versions


def _core_files(core):
    for directory, subdirectories, files in os.walk(core):
        subdirectories[:] = sorted(name for name in subdirectories if name not in _IGNORED_DIRS)
        for name in sorted(files):
            if not name.endswith(".pyc"):
                yield os.path.join(directory, name)


def sources_digest(core=CORE):
    """SHA-256 over the agent's files (paths and contents) and this script."""
    digest = hashlib.sha256()
    for path in list(_core_files(core)) + [os.path.abspath(__file__)]:
        name = os.path.relpath(path, core) if path.startswith(core + os.sep) else os.path.basename(path)
        with open(path, "rb") as handle:
            content = handle.read()
        digest.update(("%s\0%d\0" % (name, len(content))).encode() + content)
    return digest.hexdigest()


def fingerprint(core=CORE, requirements=REQUIREMENTS):
    """What a zipapp built here now would be built from."""
    return {"sources": sources_digest(core), "libraries": library_versions(requirements)}


def recorded_fingerprint(output):
    """The fingerprint a zipapp was built with, or None (absent, not a zipapp of this builder)."""
    try:
        with zipfile.ZipFile(output) as archive:
            return json.loads(archive.read(FINGERPRINT_NAME).decode())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def stale_reason(output, current):
    """Why `output` must be (re)built to match the fingerprint `current`, or None."""
    if not os.path.exists(output):
        return "%s is absent" % output
    recorded = recorded_fingerprint(output)
    if not isinstance(recorded, dict):
        return "%s has no build fingerprint" % output
    changed = ["%s %s -> %s" % (name, recorded.get("libraries", {}).get(name), wanted)
               for name, wanted in sorted(current["libraries"].items())
               if recorded.get("libraries", {}).get(name) != wanted]
    if recorded.get("sources") != current["sources"]:
        changed.insert(0, "the agent sources changed")
    return "%s was built from other inputs: %s" % (output, ", ".join(changed)) if changed else None


def build(output, core=CORE, current=None):
    """Build `output` from `core` and the installed libraries; returns `output`. It is replaced
    in one rename, so a concurrent reader or builder sees the old or the new zipapp, whole."""
    current = current or fingerprint(core)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    with tempfile.TemporaryDirectory() as staging:
        shutil.copytree(core, os.path.join(staging, "flannel"), ignore=ignore)
        for module, _distribution in DEPENDENCIES:
            imported = importlib.import_module(module)
            shutil.copytree(os.path.dirname(imported.__file__), os.path.join(staging, module), ignore=ignore)
        with open(os.path.join(staging, "__main__.py"), "w") as handle:
            handle.write(MAIN)
        with open(os.path.join(staging, FINGERPRINT_NAME), "w") as handle:
            json.dump(current, handle, sort_keys=True)
        # zipimport cannot cache bytecode, so ship it: without it every start compiles ~300
        # modules (about a second of CPU). Another Python version just compiles the sources.
        compileall.compile_dir(staging, legacy=True, quiet=1, optimize=0)
        directory = os.path.dirname(os.path.abspath(output))
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".flanneld.pyz.", dir=directory)
        os.close(handle)
        try:
            zipapp.create_archive(staging, temporary, interpreter="/usr/bin/env python3", compressed=True)
            os.chmod(temporary, 0o755)
            os.replace(temporary, output)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    return output


def main(argv):
    mode = argv[0] if argv and argv[0] in ("--stale", "--force") else None
    arguments = argv[1:] if mode else argv
    if len(arguments) > 1 or any(argument.startswith("-") for argument in arguments):
        sys.stderr.write("usage: build_agent.py [--stale | --force] [OUT]\n")
        return 2
    output = os.path.abspath(arguments[0]) if arguments else DEFAULT_OUTPUT
    try:
        current = fingerprint()
    except (BuildError, OSError) as error:
        sys.stderr.write("build_agent: %s\n" % error)
        return 1
    reason = "--force" if mode == "--force" else stale_reason(output, current)
    if mode == "--stale":
        if reason:
            print(reason)
    elif reason:
        build(output, current=current)
        print("built %s (%s)" % (output, reason))
    else:
        print("%s is up to date" % output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
