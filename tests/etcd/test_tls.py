"""etcd with TLS and client-certificate auth: the registry, the agent, the network_config role and
registry_migrate (v2 to v3).

A client with a certificate from the cluster's CA gets through; one without a certificate, with
a certificate from another CA, or not trusting the server's CA is refused with a message that
names the endpoint and the TLS failure. Neither the etcd password nor key material shows up in
the agent's log or in ansible-playbook's output (run with --diff and -vvv).
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs, acquire_lease
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
    RegistryError, RegistryUnavailable, make_registry)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry.v2 import EtcdRegistry

from support.etcdserver import LiveWriter, _b64, etcd_metric, v3_call
from support.tlsetcd import Pki, client_opener, environment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_TEXT = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",'
               ' "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472}}')
CONFIG = parse_network_config(CONFIG_TEXT)
# Distinctive values that must never be printed or logged.
PASSWORD = "Pw-tls-9f3c1e7a-never-logged"
TLS_REFUSAL = re.compile(r"certificate|SSL|TLS|EOF|reset", re.IGNORECASE)


def _key_lines(key_path):
    """The base64 lines of a PEM key: any one of them in an output is a leak."""
    with open(key_path) as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("-----")]


# ---- the registry ---------------------------------------------------------------------------

def test_registry_with_client_certificate_reads_and_writes(tls_etcd):
    registry = EtcdRegistry(tls_etcd.endpoint, **tls_etcd.client_files)
    registry.put_config(CONFIG_TEXT)
    assert json.loads(registry.get_config())["Backend"]["VNI"] == 100
    lease = acquire_lease(registry, CONFIG, LeaseAttrs("192.168.205.10", "vxlan", "0e:00:00:00:00:0a"))
    assert [item.subnet for item in registry.list_leases().leases] == [lease.subnet]
    assert CONFIG.is_compatible(lease.subnet)


def test_basic_auth_credentials_are_accepted_alongside_the_certificate(tls_etcd):
    # etcd without auth enabled ignores them; the agent and roles pass them through unchanged.
    registry = EtcdRegistry(tls_etcd.endpoint, username="flannel", password=PASSWORD, **tls_etcd.client_files)
    registry.put_config(CONFIG_TEXT)
    assert registry.get_config() == CONFIG_TEXT


def test_the_v2_watch_streams_live_changes_over_tls_with_credentials(tls_etcd):
    """The watch's own connection (registry/v2_watch.py) over TLS with the client certificate and
    basic auth: three live changes on two requests (the second one streams the rest)."""
    files = dict(tls_etcd.client_files, username="flannel", password=PASSWORD)
    watcher, context = EtcdRegistry(tls_etcd.endpoint, **files), tls_etcd.pki.client_context(
        tls_etcd.client_cert, tls_etcd.client_key)
    writer = LiveWriter(EtcdRegistry(tls_etcd.endpoint, **files), tls_etcd.endpoint,
                        lambda number: LeaseAttrs("192.168.205.%d" % number, "vxlan", "0e:00:00:00:00:%02x" % number),
                        context)
    index = watcher.list_leases().index
    requests = etcd_metric(tls_etcd.endpoint, "etcd_debugging_store_watch_requests_total", context)
    subnets = [IPNetwork("10.%d.0.0/20" % number) for number in (20, 21, 22)]
    seen = []
    for number, subnet in enumerate(subnets):
        events, index = writer.watch(watcher, index, number + 11, subnet)
        seen.extend(event.subnet for event in events)
    requests = etcd_metric(tls_etcd.endpoint, "etcd_debugging_store_watch_requests_total", context) - requests
    watcher.close()
    assert seen == subnets and requests == 2, (seen, requests)


def test_client_without_certificate_is_refused(tls_etcd):
    registry = EtcdRegistry(tls_etcd.endpoint, ca_file=tls_etcd.pki.ca)
    with pytest.raises(RegistryUnavailable) as refused:
        registry.get_config()
    message = str(refused.value)
    assert tls_etcd.endpoint in message
    assert re.search(r"bad certificate|certificate required|EOF|reset", message, re.IGNORECASE), message


def test_client_certificate_from_another_ca_is_refused(tls_etcd, tmp_path):
    foreign = Pki(tmp_path, name="foreign-ca")
    cert, key = foreign.issue("intruder", server=False)
    registry = EtcdRegistry(tls_etcd.endpoint, ca_file=tls_etcd.pki.ca, cert_file=cert, key_file=key)
    with pytest.raises(RegistryUnavailable) as refused:
        registry.put_config(CONFIG_TEXT)
    assert tls_etcd.endpoint in str(refused.value) and TLS_REFUSAL.search(str(refused.value))


def test_client_that_does_not_trust_the_cluster_ca_refuses_the_server(tls_etcd):
    registry = EtcdRegistry(tls_etcd.endpoint, cert_file=tls_etcd.client_cert, key_file=tls_etcd.client_key)
    with pytest.raises(RegistryUnavailable) as refused:
        registry.get_config()
    assert "certificate verify failed" in str(refused.value)


def test_plain_http_client_gets_nothing(tls_etcd):
    registry = EtcdRegistry(tls_etcd.endpoint.replace("https://", "http://"))
    with pytest.raises(RegistryError):
        registry.get_config()


def test_v3_registry_over_tls_with_client_certificate(tls_etcd_v3, tmp_path):
    registry = make_registry("v3", endpoints=tls_etcd_v3.endpoint, **tls_etcd_v3.client_files)
    registry.put_config(CONFIG_TEXT)
    lease = acquire_lease(registry, CONFIG, LeaseAttrs("192.168.205.10", "vxlan", "0e:00:00:00:00:0a"))
    index = registry.list_leases().index
    other = acquire_lease(make_registry("v3", endpoints=tls_etcd_v3.endpoint, **tls_etcd_v3.client_files),
                          CONFIG, LeaseAttrs("192.168.205.11", "vxlan", "0e:00:00:00:00:0b"))
    events = registry.watch_leases(index, 5)[0]  # the watch stream over TLS too
    assert [event.subnet for event in events] == [other.subnet] and other.subnet != lease.subnet
    registry.close()
    foreign = Pki(tmp_path, name="foreign-ca")
    cert, key = foreign.issue("intruder", server=False)
    for refused in (make_registry("v3", endpoints=tls_etcd_v3.endpoint, ca_file=tls_etcd_v3.pki.ca),
                    make_registry("v3", endpoints=tls_etcd_v3.endpoint, ca_file=tls_etcd_v3.pki.ca,
                                  cert_file=cert, key_file=key),
                    make_registry("v3", endpoints=tls_etcd_v3.endpoint, cert_file=tls_etcd_v3.client_cert,
                                  key_file=tls_etcd_v3.client_key)):
        with pytest.raises(RegistryUnavailable) as caught:
            refused.get_config()
        assert tls_etcd_v3.endpoint in str(caught.value) and TLS_REFUSAL.search(str(caught.value)), caught.value


def test_v3_basic_auth_credentials_are_accepted_while_etcd_auth_is_off(tls_etcd_v3):
    # As on v2 (above) and as etcd's own v3 client: etcd answers "authentication is not enabled" to
    # the login, and the registry goes on without a token.
    registry = make_registry("v3", endpoints=tls_etcd_v3.endpoint, username="flannel", password=PASSWORD,
                             **tls_etcd_v3.client_files)
    registry.put_config(CONFIG_TEXT)
    assert registry.get_config() == CONFIG_TEXT


def test_raw_https_without_certificate_is_refused_and_with_one_answers(tls_etcd):
    url = tls_etcd.endpoint + "/v2/keys/"
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5, context=tls_etcd.pki.client_context()).read()
    context = tls_etcd.pki.client_context(tls_etcd.client_cert, tls_etcd.client_key)
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        assert response.status == 200


# ---- the agent zipapp, in network namespaces ----------------------------------------------

@pytest.fixture
def tls_cluster(pki, tmp_path_factory, request):
    """tests/agent's Cluster (etcd in a LAN namespace, agents on hosts) with etcd on https."""
    if os.geteuid() != 0:
        pytest.skip("network namespace tests need root")
    from support.cluster import Cluster, build_agent
    from support.netns import Lab

    class TlsCluster(Cluster):
        def __init__(self, lab, agent_path, name):
            super().__init__(lab, agent_path, config=None, name=name)
            address = "%s.1" % lab.lan_prefix
            self.endpoint = "https://%s:2379" % address
            self.server_cert, self.server_key = pki.issue("etcd-" + lab.tag, ips=[address])
            self.client_cert, self.client_key = pki.issue("agent-" + lab.tag, server=False)

        def client_flags(self):
            return ["-etcd-cafile=" + pki.ca, "-etcd-certfile=" + self.client_cert,
                    "-etcd-keyfile=" + self.client_key]

        def __enter__(self):
            # etcd takes TLS from ETCD_*; the base class's readiness probe presents our certificate.
            with environment(pki.etcd_env(self.server_cert, self.server_key)), \
                    client_opener(pki.client_context(self.client_cert, self.client_key)):
                super().__enter__()
            self.registry = EtcdRegistry(self.endpoint, ca_file=pki.ca, cert_file=self.client_cert,
                                         key_file=self.client_key)
            self.registry.put_config(CONFIG_TEXT)
            return self

    lab = Lab()
    try:
        agent_path = build_agent(str(tmp_path_factory.mktemp("agent")))
        with TlsCluster(lab, agent_path, request.node.name) as cluster:
            yield cluster
    finally:
        lab.cleanup()


def test_agent_takes_a_lease_over_tls_and_never_logs_the_password(tls_cluster):
    host = tls_cluster.lab.add_host()
    agent = tls_cluster.agent(host, *tls_cluster.client_flags(),
                              "-etcd-username=flannel", "-etcd-password=" + PASSWORD)
    subnet = agent.wait_env(timeout=20)
    leases = tls_cluster.registry.list_leases().leases
    assert [(str(lease.subnet), lease.attrs.public_ip) for lease in leases] == [
        (str(IPNetwork(subnet).cidr), host.address)]
    assert agent.stop() == 0
    assert PASSWORD not in agent.log
    assert "acquired" in agent.log or subnet in agent.log, agent.log


def test_agent_without_client_certificate_is_refused_and_says_so(tls_cluster):
    host = tls_cluster.lab.add_host()
    agent = tls_cluster.agent(host, "-etcd-cafile=" + tls_cluster.client_flags()[0].split("=", 1)[1],
                              "-etcd-username=flannel", "-etcd-password=" + PASSWORD)
    from support.cluster import wait_for
    wait_for(lambda: tls_cluster.endpoint in agent.log, timeout=20, what="the agent to report etcd refusing it")
    status, body = agent.healthz()
    assert status in (None, 503), body
    assert not os.path.exists(agent.subnet_file)
    assert tls_cluster.registry.list_leases().leases == []
    agent.stop(signal.SIGTERM)
    assert TLS_REFUSAL.search(agent.log), agent.log
    assert PASSWORD not in agent.log


# ---- the network_config role, run by ansible-playbook --------------------------------------

def _task_output(output, name):
    """The lines ansible-playbook printed for the task `name` (up to the next task or recap)."""
    match = re.search(r"TASK \[[^]]*: %s\].*?(?=\nTASK \[|\nRUNNING HANDLER|\nPLAY RECAP)" % re.escape(name),
                      output, re.DOTALL)
    assert match, "no task %r in the output" % name
    return match.group(0)


def _playbook(tmp_path, extra_vars, tasks_play):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        "children": {"etcd": {"hosts": {"localhost": {}}}}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([tasks_play]))
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps(extra_vars))
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory),
               "-e", "@" + str(variables), "--diff", "-vvv", str(playbook)]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"))
    return subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)


@pytest.fixture
def controller_pki(tls_etcd, tmp_path):
    """The controller's PKI directory as the etcd role lays it out: ca.pem, client.pem, client-key.pem."""
    directory = tmp_path / "pki"
    directory.mkdir()
    for source, name in ((tls_etcd.pki.ca, "ca.pem"), (tls_etcd.client_cert, "client.pem"),
                         (tls_etcd.client_key, "client-key.pem")):
        shutil.copy(source, str(directory / name))
    return directory


def test_network_config_role_over_tls_prints_no_secret(tls_etcd, controller_pki, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the role installs root-owned files")
    node_dir = tmp_path / "node-pki"
    extra_vars = {
        "netlab_etcd_tls": True,
        "network_config_etcd_pki_dir": str(controller_pki),
        "network_config_etcd_tls_dir": str(node_dir),
        "network_config_etcd_endpoints": [tls_etcd.endpoint],
        "network_config_delegate_to": "localhost",
        "network_config_etcd_username": "flannel",
        "network_config_etcd_password": PASSWORD,
    }
    play = {"name": "Store the network config over TLS", "hosts": "localhost", "gather_facts": False,
            "roles": [{"role": "netlab.flannel.network_config"}]}
    run = _playbook(tmp_path, extra_vars, play)
    output = run.stdout
    assert run.returncode == 0, output
    # The key really went through the role in this run (with --diff on), and arrived intact.
    assert "changed: [localhost]" in _task_output(output, "Install the client key"), output
    with open(str(node_dir / "client-key.pem")) as installed, open(str(controller_pki / "client-key.pem")) as source:
        assert installed.read() == source.read()
    assert stat.S_IMODE(os.stat(str(node_dir / "client-key.pem")).st_mode) == 0o600
    # Positive control: --diff does print the content of copied files (here the public CA certificate),
    # so a key copied without the role's protection would show up below.
    assert any(line in output for line in _key_lines(str(controller_pki / "ca.pem"))), output
    assert PASSWORD not in output
    assert "PRIVATE KEY" not in output
    leaked = [line for line in _key_lines(str(controller_pki / "client-key.pem")) if line in output]
    assert leaked == [], "key material in ansible-playbook's output"
    stored = EtcdRegistry(tls_etcd.endpoint, **tls_etcd.client_files).get_config()
    assert json.loads(stored)["Backend"]["VNI"] == 100

    # A second run changes nothing.
    again = _playbook(tmp_path, extra_vars, play)
    assert again.returncode == 0 and re.search(r"changed=0\s", again.stdout), again.stdout


def test_network_config_role_without_client_certificate_fails_naming_the_endpoint(tls_etcd, tmp_path):
    extra_vars = {
        "network_config_etcd_endpoints": [tls_etcd.endpoint],
        "network_config_etcd_ca_file": tls_etcd.pki.ca,
        "network_config_delegate_to": "localhost",
        "network_config_etcd_password": PASSWORD,
        "network_config_etcd_username": "flannel",
    }
    play = {"name": "Store the network config without a client certificate", "hosts": "localhost",
            "gather_facts": False, "roles": [{"role": "netlab.flannel.network_config"}]}
    run = _playbook(tmp_path, extra_vars, play)
    assert run.returncode != 0, run.stdout
    assert "network_config_etcd_endpoints (%s)" % tls_etcd.endpoint in run.stdout, run.stdout
    assert TLS_REFUSAL.search(run.stdout)
    # The former name still reaches the plugin, with a deprecation message naming the new one.
    assert re.search(r"\[DEPRECATED\] network_config_etcd_ca_file is deprecated .*? use\s+network_config_etcd_cafile",
                     run.stdout, re.DOTALL), run.stdout
    assert PASSWORD not in run.stdout


# ---- registry_migrate over TLS, run by ansible-playbook -------------------------------------

@pytest.fixture
def tls_both(tls_etcd):
    """The shared TLS etcd with a clean v3 keyspace too (its wipe clears v2 only)."""
    context = tls_etcd.pki.client_context(tls_etcd.client_cert, tls_etcd.client_key)
    everything = {"key": _b64("\0"), "range_end": _b64("\0")}
    with client_opener(context):
        v3_call(tls_etcd.endpoint, "/v3/kv/deleterange", everything)
    yield tls_etcd
    with client_opener(context):
        v3_call(tls_etcd.endpoint, "/v3/kv/deleterange", everything)


def test_registry_migrate_over_tls_copies_v2_to_v3_once(tls_both, tmp_path):
    source = EtcdRegistry(tls_both.endpoint, **tls_both.client_files)
    source.put_config(CONFIG_TEXT)
    reserved = source.create_lease(IPNetwork("10.20.0.0/20"), LeaseAttrs("192.168.205.11", "vxlan", "0e:00:00:00:00:0b"),
                                   None)
    held = acquire_lease(source, CONFIG, LeaseAttrs("192.168.205.10", "vxlan", "0e:00:00:00:00:0a"))
    results = tmp_path / "results.json"
    connection = dict(etcd_api="v3", endpoints=[tls_both.endpoint], **tls_both.client_files)
    play = {"name": "Migrate over TLS", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Copy without a client certificate", "register": "refused", "ignore_errors": True,
         "netlab.flannel.registry_migrate": dict(etcd_api="v3", endpoints=[tls_both.endpoint], ca_file=tls_both.pki.ca)},
        {"name": "Copy", "register": "first", "netlab.flannel.registry_migrate": connection},
        {"name": "Copy again", "register": "second", "netlab.flannel.registry_migrate": connection},
        {"name": "Keep the results", "ansible.builtin.copy": {
            "content": "{{ {'refused': refused, 'first': first, 'second': second} | to_json }}", "dest": str(results)}},
    ]}
    run = _playbook(tmp_path, {}, play)
    assert run.returncode == 0, run.stdout
    outcome = json.loads(results.read_text())

    # Without a client certificate etcd refuses the handshake: the module says where and why, and writes nothing.
    refused = outcome["refused"]
    assert refused["failed"] and tls_both.endpoint in refused["msg"] and TLS_REFUSAL.search(refused["msg"]), refused
    # v2 in, v3 out: the config and both leases, the live one with the TTL it had left.
    first = outcome["first"]
    assert first["changed"] and first["config_copied"], first
    copied = dict((item["subnet"], item) for item in first["copied"])
    assert sorted(copied) == sorted([str(reserved.subnet), str(held.subnet)]), first
    assert copied[str(reserved.subnet)]["ttl"] is None
    assert held.ttl - 120 < copied[str(held.subnet)]["ttl"] <= held.ttl
    target = make_registry("v3", endpoints=tls_both.endpoint, **tls_both.client_files)
    assert target.get_config() == CONFIG_TEXT
    stored = dict((str(lease.subnet), lease) for lease in target.list_leases().leases)
    assert dict((subnet, lease.attrs) for subnet, lease in stored.items()) == {
        str(reserved.subnet): reserved.attrs, str(held.subnet): held.attrs}
    assert stored[str(reserved.subnet)].is_reservation
    assert held.ttl - 120 < stored[str(held.subnet)].ttl <= held.ttl
    # A second run finds everything in place and changes nothing.
    second = outcome["second"]
    assert not second["changed"] and not second["config_copied"] and second["copied"] == [], second
    assert sorted(second["unchanged"]) == sorted(copied)
    # v2 is left as it was.
    assert sorted(str(lease.subnet) for lease in source.list_leases().leases) == sorted(copied)
