"""tests/support/labtools.py's lab_lock: a run wrapped in `flock LOCK ...` (as HELPERS and the
Makefile's lab targets do) goes on under its parent's hold instead of waiting for ever on it; a
lock held by any other process is still waited for; taken again in the same process, it is held
once. A hand-over (a case leaving the lab in a state for the next) keeps the lock between the two
cases and restores a state the next case does not start from."""

import fcntl
import os
import subprocess
import sys

import pytest

from support import labtools

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


def taken_elsewhere(lock):
    """Whether another open file of `lock` would wait (flock(2) locks are per open file)."""
    with open(lock, "a") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False


def test_the_lock_taken_again_in_the_same_process_is_held_until_the_outer_hold_ends(tmp_path):
    lock = str(tmp_path / "lab.lock")
    # In a child process with a timeout: a second flock(2) of our own would wait for ever.
    nested = ("import sys\nfrom support.labtools import lab_lock\nfrom test_lab_lock import taken_elsewhere\n"
              "with lab_lock(sys.argv[1]):\n    with lab_lock(sys.argv[1]):\n        pass\n"
              "    print('held after the inner hold' if taken_elsewhere(sys.argv[1]) else 'released too early')\n")
    environment = dict(ENVIRONMENT, PYTHONPATH=ENVIRONMENT["PYTHONPATH"] + os.pathsep + os.path.dirname(__file__))
    result = subprocess.run([sys.executable, "-c", nested, lock], env=environment, timeout=20, check=False,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0 and result.stdout == "held after the inner hold\n", result.stdout
    assert not taken_elsewhere(lock)


def test_a_hand_over_keeps_the_lock_until_the_next_case_takes_its_state(tmp_path):
    lock = str(tmp_path / "lab.lock")
    restored = []
    with labtools.lab_lock(lock):
        labtools.hand_over("left", lambda: restored.append("left"))
    assert taken_elsewhere(lock)  # between two cases: no other session gets the lab off its config
    with labtools.lab_lock(lock):
        assert labtools._take_over(("left",)) == "left"
    assert restored == [] and not taken_elsewhere(lock)


def test_a_state_the_next_case_does_not_start_from_is_restored_first(tmp_path):
    lock = str(tmp_path / "lab.lock")
    restored = []
    with labtools.lab_lock(lock):
        labtools.hand_over("left", lambda: restored.append(taken_elsewhere(lock)))
    with labtools.lab_lock(lock):
        assert labtools._take_over(("another",)) is None
    assert restored == [True] and not taken_elsewhere(lock)  # restored under the lock, then released
    with labtools.lab_lock(lock):
        labtools.hand_over("left", lambda: restored.append("at the end"))
    labtools.restore_handed_over_lab()
    assert restored == [True, "at the end"] and not taken_elsewhere(lock)
    labtools.restore_handed_over_lab()  # nothing pending: nothing runs
    assert restored == [True, "at the end"]
