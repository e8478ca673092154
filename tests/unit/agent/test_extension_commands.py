"""The extension backend's command lines: split without a shell (shell syntax refused, naming the
fix), run with only PATH and their variables, their output read from files, killed with their
process group after the timeout; and the queue that runs them in order off the agent's loop."""

import os
import signal
import threading
import time

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends import command_lines, commands


@pytest.mark.parametrize("line, words", [
    ("ip route replace 10.1.0.0/16 dev eth0", ["ip", "route", "replace", "10.1.0.0/16", "dev", "eth0"]),
    ("""touch '/tmp/a b' "c d" e\\ f""", ["touch", "/tmp/a b", "c d", "e f"]),
    ("sh -c 'ip route replace $SUBNET via $PUBLIC_IP; echo done > /tmp/x'",
     ["sh", "-c", "ip route replace $SUBNET via $PUBLIC_IP; echo done > /tmp/x"]),
    # A wrapper before the shell (a namespace, an environment) is fine: the rest is the shell's.
    ("ip netns exec blue /bin/bash -c 'echo $SUBNET | tee /tmp/x'",
     ["ip", "netns", "exec", "blue", "/bin/bash", "-c", "echo $SUBNET | tee /tmp/x"]),
    ("wg set flannel-wg peer abc= allowed-ips 10.1.0.0/16", ["wg", "set", "flannel-wg", "peer", "abc=",
                                                             "allowed-ips", "10.1.0.0/16"]),
])
def test_a_line_is_split_into_words_as_a_shell_would(line, words):
    assert command_lines.split_command(line) == words


@pytest.mark.parametrize("line, message", [
    ("ip route replace $SUBNET dev eth0", "'$SUBNET' is shell syntax, but the command runs without a shell; to "
                                          "have a shell read it, write: sh -c 'ip route replace $SUBNET dev eth0'"),
    ("echo ${SUBNET}", "'${SUBNET}' is shell syntax"),
    ("echo $(hostname)", "'$(hostname)' is shell syntax"),
    ("echo `hostname`", "'`hostname`' is shell syntax"),
    ("wg genkey | wg pubkey", "'|' is shell syntax"),
    ("ip link del x; true", "'x;' is shell syntax"),
    ("ip link del x && true", "'&&' is shell syntax"),
    ("wg pubkey < /etc/key", "'<' is shell syntax"),
    ("wg genkey >/etc/key", "'>/etc/key' is shell syntax"),
    ("ip link del x 2>/dev/null", "'2>/dev/null' is shell syntax"),
    ("wireguard-go wg0 &", "'&' is shell syntax"),
    ("echo 'unclosed", "'echo '\"'\"'unclosed' cannot be split into words: no closing quotation"),
    ("   ", "'   ' has no command"),
])
def test_a_line_that_needs_a_shell_it_does_not_start_is_refused_saying_how_to_ask(line, message):
    with pytest.raises(ValueError) as error:
        command_lines.split_command(line)
    assert str(error.value).startswith(message)


def test_a_command_gets_only_path_its_variables_and_its_input(monkeypatch):
    monkeypatch.setenv("SECRET_OF_THE_AGENT", "x")
    result = commands.run(["env"], {"SUBNET": "10.1.0.0/20", "PUBLIC_IP": "192.0.2.1"}, "", 10)
    assert sorted(result.stdout.splitlines()) == ["PATH=%s" % os.environ["PATH"], "PUBLIC_IP=192.0.2.1",
                                                  "SUBNET=10.1.0.0/20"]
    result = commands.run(["cat"], {}, "peer data\n", 10)
    assert (result.status, result.stdout, result.stderr, result.timed_out) == (0, "peer data\n", "", False)
    assert commands.run(["pwd"], {}, "", 10).stdout == "/\n"


def test_exit_status_signal_and_a_missing_program_are_failures_with_their_stderr():
    result = commands.run(["sh", "-c", "echo out; echo 'bad peer' >&2; exit 3"], {}, "", 10)
    assert (result.status, result.stdout, result.stderr) == (3, "out\n", "bad peer\n")
    assert commands.failure(result, 10) == "exit status 3; stderr: bad peer"
    assert commands.failure(commands.run(["sh", "-c", "echo only out; exit 1"], {}, "", 10), 10) == \
        "exit status 1; output: only out"
    assert commands.failure(commands.run(["false"], {}, "", 10), 10) == "exit status 1; no output"
    assert commands.failure(commands.run(["sh", "-c", "kill -TERM $$"], {}, "", 10), 10) == \
        "killed by signal %d; no output" % signal.SIGTERM
    missing = commands.run(["/nonexistent/netlab-command"], {}, "", 10)
    assert missing.status is None
    assert commands.failure(missing, 10) == "cannot run /nonexistent/netlab-command: No such file or directory"
    assert commands.failure(commands.run(["true"], {}, "", 10), 10) is None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as handle:
        return handle.read().split(") ")[1][0] != "Z"


def test_a_hanging_command_is_killed_with_everything_it_started(tmp_path):
    pids = tmp_path / "pids"
    result = commands.run(["sh", "-c", "sleep 600 & echo $! > %s; echo started; exec sleep 600" % pids], {}, "", 3)
    assert result.timed_out and result.status == -signal.SIGKILL and result.stdout == "started\n"
    assert commands.failure(result, 3) == "still running after 3 s: killed with its process group; output: started"
    background = int(pids.read_text())
    deadline = time.monotonic() + 10  # SIGKILL is sent; the orphan dies when next scheduled
    while _alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(background)


def test_what_a_finished_command_left_running_is_not_waited_for_nor_killed(tmp_path):
    """A daemon started by a command (wireguard-go, say) keeps running, its output still open."""
    pids = tmp_path / "pids"
    result = commands.run(["sh", "-c", "sleep 600 & echo $! > %s" % pids], {}, "", 60)
    assert (result.status, result.timed_out) == (0, False)
    daemon = int(pids.read_text())
    try:
        assert _alive(daemon)
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_the_queue_runs_jobs_in_order_past_a_failing_one_and_drains(caplog):
    queue, ran, release = commands.CommandQueue("test-commands"), [], threading.Event()

    def broken():
        raise RuntimeError("a bug")

    queue.put(lambda: release.wait(10))
    for number in range(3):
        queue.put(lambda number=number: ran.append(number))
        queue.put(broken)
    assert queue.drain(0.1) == 7  # the first still waits: nothing after it ran
    assert ran == []
    release.set()
    assert queue.drain(10) == 0
    assert ran == [0, 1, 2]
    assert caplog.text.count("test-commands: a queued command failed") == 3
    queue.close()
    queue.put(lambda: ran.append("after close"))
    assert queue.drain(1) == 0 and ran == [0, 1, 2]
