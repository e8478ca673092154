"""tools/build_agent.py, the one builder of the agent zipapp, and its one staleness rule: absent, or
built from other agent sources or library versions; a library installed at another version than
requirements.txt pins stops it. The flanneld role's build step is run for real (ansible-playbook
on the controller only)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tools", "build_agent.py")
_spec = importlib.util.spec_from_file_location("build_agent", SCRIPT)
build_agent = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_agent)


def _run(*arguments):
    return subprocess.run([sys.executable, SCRIPT] + list(arguments), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("agent") / "flanneld.pyz")
    result = _run(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "built %s (%s is absent)\n" % (path, path)
    return path


def _with_fingerprint(tmp_path, recorded):
    path = str(tmp_path / "flanneld.pyz")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(build_agent.FINGERPRINT_NAME, json.dumps(recorded))
    return path


def test_a_built_zipapp_runs_and_is_not_rebuilt_while_current(built):
    version = subprocess.run([sys.executable, built, "-version"], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout
    assert version.strip() == "1.0.0"
    before = os.stat(built).st_mtime_ns
    assert _run(built).stdout == "%s is up to date\n" % built
    assert _run("--stale", built).stdout == ""
    assert os.stat(built).st_mtime_ns == before
    assert build_agent.recorded_fingerprint(built) == build_agent.fingerprint()


def test_a_changed_agent_source_makes_it_stale(built, tmp_path):
    core = str(tmp_path / "flannel")
    shutil.copytree(build_agent.CORE, core, ignore=shutil.ignore_patterns("__pycache__"))
    assert build_agent.sources_digest(core) == build_agent.sources_digest()
    with open(os.path.join(core, "cli.py"), "a") as handle:
        handle.write("# changed\n")
    assert build_agent.stale_reason(built, build_agent.fingerprint(core)) == (
        "%s was built from other inputs: the agent sources changed" % built)


def test_a_zipapp_built_before_a_library_pin_changed_is_stale(tmp_path):
    current = build_agent.fingerprint()
    older = dict(current, libraries=dict(current["libraries"], urllib3="2.4.0"))
    path = _with_fingerprint(tmp_path, older)
    assert _run("--stale", path).stdout == "%s was built from other inputs: urllib3 2.4.0 -> %s\n" % (
        path, current["libraries"]["urllib3"])
    assert build_agent.stale_reason(_with_fingerprint(tmp_path, current), current) is None


def test_a_library_other_than_the_pin_stops_the_build(tmp_path):
    requirements = tmp_path / "requirements.txt"
    with open(build_agent.REQUIREMENTS) as handle:
        pinned = handle.read()
    installed = build_agent.pinned_versions()["urllib3"]
    requirements.write_text(pinned.replace("urllib3==%s" % installed, "urllib3==0.0.1"))
    with pytest.raises(build_agent.BuildError) as caught:
        build_agent.library_versions(str(requirements))
    assert str(caught.value) == ("urllib3 %s is installed for %s, but requirements.txt pins 0.0.1: "
                                 "pip install -r requirements.txt" % (installed, sys.executable))
    requirements.write_text(pinned.replace("urllib3==%s" % installed, "urllib3>=2"))
    with pytest.raises(build_agent.BuildError) as caught:
        build_agent.library_versions(str(requirements))
    assert str(caught.value) == "requirements.txt pins no version of urllib3, a library the agent bundles"


def test_stale_reasons_and_nothing_built_when_only_asked(tmp_path):
    absent = str(tmp_path / "absent.pyz")
    assert _run("--stale", absent).stdout == "%s is absent\n" % absent
    assert not os.path.exists(absent)
    other = tmp_path / "other.pyz"
    other.write_text("not a zipapp of this builder")
    assert _run("--stale", str(other)).stdout == "%s has no build fingerprint\n" % other
    assert other.read_text() == "not a zipapp of this builder"
    assert _run("--bogus").returncode == 2


def test_the_role_build_step_builds_when_stale_and_then_changes_nothing(tmp_path):
    output = str(tmp_path / "flanneld.pyz")
    playbook = tmp_path / "build.yml"
    playbook.write_text("""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: netlab.flannel.flanneld
        tasks_from: build
      vars:
        flanneld_agent_src: %s
""" % output)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
               "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)]

    def run():
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, check=False)
        assert result.returncode == 0, result.stdout
        return result.stdout

    assert "changed=1" in run() and build_agent.stale_reason(output, build_agent.fingerprint()) is None
    mtime = os.stat(output).st_mtime_ns
    assert "changed=0" in run() and os.stat(output).st_mtime_ns == mtime
    _with_fingerprint(tmp_path, {"sources": "older", "libraries": {}})  # built before a source and pin changed
    assert "changed=1" in run() and build_agent.stale_reason(output, build_agent.fingerprint()) is None
