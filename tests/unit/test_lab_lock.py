"""tests/support/labtools.py's lab_lock: a run wrapped in `flock LOCK ...` (as HELPERS and the
Makefile's lab targets do) goes on under its parent's hold instead of waiting for ever on it; a
lock held by any other process is still waited for."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENVIRONMENT = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests"), os.path.join(ROOT, ".collections")]))
HOLD = "import fcntl, sys, time\nhandle = open(sys.argv[1], 'a')\nfcntl.flock(handle, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"
TAKE = "import sys\nfrom support.labtools import lab_lock\nwith lab_lock(sys.argv[1]):\n    print('inside')\n"


def take(lock, wrapper=(), timeout=30):
    return subprocess.run(list(wrapper) + [sys.executable, "-c", TAKE, str(lock)], env=ENVIRONMENT, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)


def test_a_run_under_flock_of_the_same_lock_goes_on(tmp_path):
    lock = tmp_path / "lab.lock"
    result = take(lock, ["flock", str(lock), "bash", "-c", '"$@"', "wrapper"])
    assert result.returncode == 0 and result.stdout == "inside\n", result.stdout


def test_a_lock_held_by_another_process_is_waited_for(tmp_path):
    lock = tmp_path / "lab.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(subprocess.TimeoutExpired):
            take(lock, timeout=3)
    finally:
        holder.kill()
        holder.wait()
    assert take(lock).stdout == "inside\n"
