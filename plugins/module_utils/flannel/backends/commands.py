"""The extension backend's commands: how they run (their lines are split by command_lines.py).

A command runs with only PATH and its variables in its environment (v0.10 passes only the
variables), its standard input from a file and its output into files: the agent waits for the
command's own process, not for whatever it left running in the background (a daemon it started
keeps running). A command still running after its timeout is killed with its whole process
group.
"""

import atexit
import collections
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time

LOG = logging.getLogger("flannel.backend.extension")
OUTPUT_LIMIT = 65536  # bytes of a command's stdout or stderr read back (a lease holds far less)
LOG_LIMIT = 500  # characters of a command's output in one log line
_running = set()  # the Popen objects running now (the exit handler kills their groups)
_running_lock = threading.Lock()

Result = collections.namedtuple("Result", "status stdout stderr timed_out seconds")


def environment(variables):
    """A command's environment: PATH (the agent's, else the system default) and `variables`."""
    env = {"PATH": os.environ.get("PATH") or os.defpath}
    env.update((name, str(value)) for name, value in variables.items())
    return env


def run(argv, variables, stdin, timeout):
    """Run `argv` with `variables` and `stdin` (text); returns a Result (status: the exit status,
    negative for a signal; None when it could not start, stderr then says why)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        given.write(stdin.encode("utf-8", "replace"))
        given.seek(0)
        try:
            process = subprocess.Popen(argv, stdin=given, stdout=out, stderr=err, env=environment(variables),
                                       cwd="/", close_fds=True, start_new_session=True)
        except OSError as error:
            return Result(None, "", "cannot run %s: %s" % (argv[0], error.strerror or error), False, 0.0)
        with _running_lock:
            _running.add(process)
        timed_out = False
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
            process.wait()
        finally:
            with _running_lock:
                _running.discard(process)
        return Result(process.returncode, _read(out), _read(err), timed_out, time.monotonic() - started)


def _read(handle):
    handle.seek(0)
    return handle.read(OUTPUT_LIMIT).decode("utf-8", "replace")


def _kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:  # already gone
        pass


@atexit.register
def _kill_running():
    """The agent is exiting: a command still running (hanging, or cut short) must not outlive it."""
    with _running_lock:
        for process in list(_running):
            _kill_group(process)


def failure(result, timeout):
    """Why `result` is a failure, with its stderr (else its stdout), or None when it succeeded."""
    if result.timed_out:
        why = "still running after %d s: killed with its process group" % timeout
    elif result.status is None:
        return result.stderr
    elif result.status < 0:
        why = "killed by signal %d" % -result.status
    elif result.status:
        why = "exit status %d" % result.status
    else:
        return None
    stderr, stdout = result.stderr.strip(), result.stdout.strip()
    if stderr:
        return "%s; stderr: %s" % (why, shorten(stderr))
    return "%s; output: %s" % (why, shorten(stdout)) if stdout else "%s; no output" % why


def shorten(text):
    text = " ".join(text.split())
    return text if len(text) <= LOG_LIMIT else text[:LOG_LIMIT] + "... (%d characters)" % len(text)


class CommandQueue:
    """Runs jobs (callables) one at a time, in the order given, on a thread of its own: the agent's
    loop queues a peer's command and goes on, so a slow or hanging command (each bounded by its
    timeout) delays only the commands queued after it."""

    def __init__(self, name):
        self.name = name
        self._jobs = collections.deque()
        self._changed = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread = None

    def put(self, job):
        with self._changed:
            if self._closing:
                return
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def drain(self, timeout):
        """Wait until every queued job ran, at most `timeout` s; the number of jobs left."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self._jobs or self._busy) and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return len(self._jobs) + (1 if self._busy else 0)

    def close(self):
        """Take no more jobs; the thread runs those queued, then ends."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def _run(self):
        while True:
            with self._changed:
                while not self._jobs and not self._closing:
                    self._changed.wait()
                if not self._jobs:
                    self._thread = None
                    return
                job = self._jobs.popleft()
                self._busy = True
            try:
                job()
            except Exception:  # a bug in one job must not stop the commands queued after it
                LOG.exception("%s: a queued command failed", self.name)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
