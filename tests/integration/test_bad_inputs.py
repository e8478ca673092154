"""Bad inputs are rejected with a message naming the key and the rule; nothing changes.

Issue 5: "a table of at least 30 bad inputs (network config JSON, role variables, module
arguments, agent flags): each rejected with a message naming the key and the rule; etcd and hosts
unchanged afterwards (checked, not assumed)."

Network config JSON and agent flags are covered where they are parsed, by reference:
  * tests/unit/agent/test_config.py: 82 bad network configs (not JSON, not an object, too big,
    too deep, unknown or repeated keys, Network missing/not a CIDR/host bits/whitespace/not
    unicast/too small, SubnetLen, SubnetMin/Max out of range or off boundary, udp/unknown backend,
    VNI, Port, GBP, DirectRouting, ...), each naming the key and the rule; the action plugin
    reuses that parser (cases R1-R4, R36-R48, M1-M2, M14-M18 below show it end to end);
  * tests/unit/agent/test_cli.py::test_usage_errors_name_the_flag (9 cases: an unknown flag, a
    missing value, a stray argument and 6 bad values of 4 flags) and
    test_bad_environment_value_names_the_variable (1): the agent exits 2 naming the flag.

This file adds 66 cases run through ansible-playbook:

Role variables, against the lab (its two nodes; site.yml or one role on its first node, labtools.NODE1):
  id   run        input                                              message names          rule
  R1   site.yml   network_config_flannel.Network "10.0.0.0"          network_config_flannel.Network   must be an IPv4 CIDR
  R2   site.yml   network_config_flannel.Backend.VNI 0               network_config_flannel.Backend.VNI  between 1 and 16777215
  R3   site.yml   network_config_flannel.Backend.Type udp2           network_config_flannel.Backend.Type  unknown backend type
  R4   site.yml   network_config_flannel.SubnetLen "20"              network_config_flannel.SubnetLen  must be an integer
  R5   site.yml   flanneld_iface [eth9]                              flanneld_iface         not an interface of the host
  R6   network_config  network_config_flannel "10.0.0.0/8" (a str)   network_config_flannel  JSON object ... got the text
  R7   network_config  network_config_etcd_client_port "abc"         network_config_etcd_client_port  convert to int
  R8   network_config  network_config_etcd_group nosuchgroup         network_config_etcd_group  has no hosts
  R9   network_config  network_config_etcd_endpoints "x" (a dict)    network_config_etcd_endpoints  convert to list
  R10  flanneld   flanneld_healthz_port "abc"                        flanneld_healthz_port  convert to int
  R11  flanneld   flanneld_ip_masq "maybe"                           flanneld_ip_masq       convert to bool
  R12  flanneld   flanneld_reconcile_interval "often"                flanneld_reconcile_interval  convert to int
  R13  flanneld   flanneld_subnet_lease_renew_margin "soon"          flanneld_subnet_lease_renew_margin  convert to int
  R14  flanneld   flanneld_etcd_certfile without flanneld_etcd_keyfile  flanneld_etcd_certfile and flanneld_etcd_keyfile  set together
  R15  flanneld   flanneld_etcd_endpoints [http://<first node>:1]     flanneld_etcd_endpoints  etcd unreachable
  R16  flanneld   flanneld_iface_regex {"a": "b"} (a dict)           flanneld_iface_regex   convert to list
  R17  docker     docker_bip 10.0.0.1 (no prefix)                    docker_bip             ADDRESS/PREFIX
  R18  docker     docker_mtu 20                                      docker_mtu             between 68 and 65535
  R19  docker     docker_mtu "big"                                   docker_mtu             whole number
  R20  docker     docker_ip_masq maybe                               docker_ip_masq         auto, true or false
  R21  docker     docker_daemon_options "x"                          docker_daemon_options  convert to dict
  R22  docker     docker_ready_retries "many"                        docker_ready_retries   convert to int
  R23  forward    forward_mode bogus                                 forward_mode           must be one of
  R24  forward    forward_networks [not-a-cidr]                      forward_networks       ADDRESS/PREFIX
  R25  forward    forward_mode rules, forward_networks []            forward_networks       needs at least one
  R26  forward    forward_docker_dropin "perhaps"                    forward_docker_dropin  convert to bool
  R27  forward    forward_remove_policy REJECT                       forward_remove_policy  must be one of
  R28  etcd       etcd_install_method snap                           etcd_install_method    must be one of
  R29  etcd       etcd_client_port "abc"                             etcd_client_port       convert to int
  R30  etcd       etcd_enable_v2 "perhaps"                           etcd_enable_v2         convert to bool
  R31  etcd       etcd_extra_env "x"                                 etcd_extra_env         convert to dict
  R32  etcd       etcd_address_variable no_such_var                  no_such_var            every member needs it
  R33  flanneld   flanneld_subnet_lease_renew_margin 0               flanneld_subnet_lease_renew_margin  between 1 and 1439
  R34  flanneld   flanneld_healthz_port 70000                        flanneld_healthz_port  between 0 (off) and 65535
  R35  flanneld   flanneld_reconcile_interval 0                      flanneld_reconcile_interval  above 0 seconds
  R36  site.yml   network_config_flannel.Netwrok beside Network      network_config_flannel.Netwrok  unknown key, did you mean "Network"?
  R37  (unit)     network_config_flannel.Backend.VNl 100             network_config_flannel.Backend.VNl  unknown key, did you mean "VNI"?
  R38  (unit)     network_config_flannel.Network "10.1.2.3/8"        network_config_flannel.Network  host bits set
  R39  (unit)     network_config_flannel.Network "10.0.0.0/8 "       network_config_flannel.Network  surrounding whitespace
  R40  (unit)     network_config_flannel.Network "0.0.0.0/0"         network_config_flannel.Network  the whole address space
  R41  (unit)     network_config_flannel.Network "127.0.0.0/8"       network_config_flannel.Network  loopback
  R42  (unit)     network_config_flannel.Network "224.0.0.0/4"       network_config_flannel.Network  multicast
  R43  (unit)     network_config_flannel.Network "169.254.0.0/16"    network_config_flannel.Network  link-local
  R44  site.yml   network_config_flannel.Network "192.168.0.0/16"    network_config_flannel.Network  contains the first node's address
  R45  (unit)     network_config_flannel: 10,000 nested lists (text) network_config_flannel  more than 8 levels deep
  R46  site.yml   network_config_flannel of 4 MiB (-e @file)         network_config_flannel  above the limit of 65536 bytes
  R47  (unit)     network_config_flannel ["10.0.0.0/8"] (a list)     network_config_flannel  JSON object ... got a list
  R48  (unit)     network_config_flannel.Backend.Type ""             network_config_flannel.Backend.Type  unknown backend type: ""
  R49  flanneld   flanneld_etcd_client_port "abc"                    flanneld_etcd_client_port  convert to int
  R50  flanneld   flanneld_etcd_client_port 70000                    flanneld_etcd_client_port  not a TCP port
  R51  network_config  network_config_etcd_client_port 0             network_config_etcd_client_port  not a TCP port
  R52  flanneld   flanneld_etcd_password "pass<newline>word"        flanneld_etcd_password  systemd cannot pass it
  R53  flanneld   flanneld_etcd_password "pass<NUL>word"            flanneld_etcd_password  systemd cannot pass it
  R54  flanneld   flanneld_iface_regex ["^eth0$", "^eth1<CR>$"]     flanneld_iface_regex   systemd cannot pass it
  R55  flanneld   flanneld_metrics_port 8471 (the healthz port)     flanneld_metrics_port  it is the -healthz-port
  R56  flanneld   flanneld_metrics_port 70000                        flanneld_metrics_port  between 0 (off) and 65535
  R57  flanneld   flanneld_etcd_prefix "/coreos.com/net work"        flanneld_etcd_prefix   must be a key path
  R58  flanneld   flanneld_vxlan_offload maybe                       flanneld_vxlan_offload  auto, on or off

Rows marked (unit) are rules of the network config parser, run on the lab once for each kind of
wiring only (R36: a key the parser does not know, R44: the inventory's host addresses reaching the
check, R46: a config too big for the command line, given as -e @file); the others run where they are
cheapest, through the same action plugin the role calls, with the lab's host addresses, in
tests/unit/plugins/action/test_action_network_config.py::test_invalid_config_fails_on_the_controller_and_etcd_is_unchanged
(R37 [config9], R38 [config10], R39 [config11], R40 [config12], R41 [config13], R42 [config14],
R43 [config15], R45 [config18], R47 [config7], R48 [config1]) and in the parser's table,
tests/unit/agent/test_config.py.

Module arguments, on the controller (connection local) against the tests' own etcd (seeded with a
config and a lease):
  M1   network_config  config "{not json"                            config                 not valid JSON
  M2   network_config  config.Backend.VNI 16777216, config_name net  net.Backend.VNI        between 1 and 16777215
  M3   network_config  bogus: 1                                      bogus                  Invalid options
  M4   network_config  report_leases "perhaps"                       report_leases          convert to bool
  M5   lease           state present                                 state                  must be one of
  M6   lease           timeout "soon"                                timeout                convert to float
  M7   lease           cert_file without key_file                    cert_file, key_file    required together
  M8   lease_info      bogus: 1                                      bogus                  Unsupported parameters
  M9   lease_info      endpoints {} (a dict)                         endpoints              convert to list
  M10  overlay_info    vni "abc"                                     vni                    convert to int
  M11  overlay_info    peers "x"                                     peers                  dict
  M12  overlay_info    bogus: 1                                      bogus                  Unsupported parameters
  M13  overlay_info    neither vni nor device                        vni, device            one of them is required
  M14  network_config  config: 10,000 nested objects (text)          config                 more than 8 levels deep
  M15  network_config  config: 4 MiB                                 config                 above the limit of 65536 bytes
  M16  network_config  config ["10.0.0.0/8"] (a list)                config                 JSON object ... got a list
  M17  network_config  config.Netwrok beside Network                 Netwrok                unknown key, did you mean "Network"?
  M18  network_config  host_addresses {node9: 10.20.0.5}             Network                contains node9's address
  M19  overlay_info    wireguard false, neither vni nor device       vni, device            one of them is required

Each case fails (rc != 0), its output contains every expected fragment, and a snapshot taken
before equals one taken after: on the lab the etcd keyspace under /coreos.com/network (v2 API,
recursive, read inside a node) and each node's daemon.json, flanneld unit and environment, etcd
environment, forward drop-in and sysctl file, subnet.env, etcd/flanneld/docker activity,
`ip -d link show flannel.100`, docker0's address, the FORWARD chain and the masquerade rule
count; on the controller the tests' etcd keyspace and the controller's flannel.* links. The role
cases hold the lab's lock all together and run four at a time (issue 25: a lab run mostly waits on
its hosts): the snapshots are taken before and after them all, and when those differ each case is
run again alone between two snapshots, so that the one that changed the lab fails, named (and every
case fails when none changes it alone).
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

import etcd
import pytest

from support.labtools import NODE1, NODES, PLAYBOOKS, ROOT, ansible_playbook, ensure_lab, lab_inventories, lab_snapshot

SITE = os.path.join(ROOT, "playbooks", "site.yml")
ROLE = os.path.join(PLAYBOOKS, "role.yml")
LAB_CONFIG = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
              "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472}}


def backend(**changes):
    config = json.loads(json.dumps(LAB_CONFIG))
    config["Backend"].update(changes)
    return config


def config_with(**changes):
    config = json.loads(json.dumps(LAB_CONFIG))
    config.update(changes)
    return config


# (id, playbook or role name, extra vars, fragments the output must contain)
ROLE_CASES = [
    ("R1", "site", {"network_config_flannel": config_with(Network="10.0.0.0")},
     ["network_config_flannel.Network: must be an IPv4 CIDR"]),
    ("R2", "site", {"network_config_flannel": backend(VNI=0)},
     ["network_config_flannel.Backend.VNI: must be between 1 and 16777215"]),
    ("R3", "site", {"network_config_flannel": backend(Type="udp2")},
     ["network_config_flannel.Backend.Type: unknown backend type: \"udp2\""]),
    ("R4", "site", {"network_config_flannel": config_with(SubnetLen="20")},
     ["network_config_flannel.SubnetLen: must be an integer"]),
    ("R5", "site", {"flanneld_iface": ["eth9"]},
     ["flanneld_iface: none of eth9 is an interface name or IPv4 address of this host"]),
    ("R6", "network_config", {"network_config_flannel": "10.0.0.0/8"},
     ['network_config_flannel: must be a JSON object (a dictionary) or JSON text of one, got the text '
      '\\"10.0.0.0/8\\"']),
    ("R7", "network_config", {"network_config_etcd_client_port": "abc"},
     ["network_config_etcd_client_port", "unable to convert to int"]),
    ("R8", "network_config", {"network_config_etcd_group": "nosuchgroup"},
     ["network_config_etcd_group: the inventory group 'nosuchgroup' has no hosts"]),
    ("R9", "network_config", {"network_config_etcd_endpoints": {"url": "x"}},
     ["network_config_etcd_endpoints", "unable to convert to list"]),
    ("R10", "flanneld", {"flanneld_healthz_port": "abc"},
     ["flanneld_healthz_port", "unable to convert to int"]),
    ("R11", "flanneld", {"flanneld_ip_masq": "maybe"},
     ["flanneld_ip_masq", "unable to convert to bool"]),
    ("R12", "flanneld", {"flanneld_reconcile_interval": "often"},
     ["flanneld_reconcile_interval", "unable to convert to int"]),
    ("R13", "flanneld", {"flanneld_subnet_lease_renew_margin": "soon"},
     ["flanneld_subnet_lease_renew_margin", "unable to convert to int"]),
    ("R14", "flanneld", {"flanneld_etcd_certfile": "/etc/flannel/client.pem"},
     ["flanneld_etcd_certfile and flanneld_etcd_keyfile must be set together"]),
    ("R15", "flanneld", {"flanneld_etcd_endpoints": ["http://%s:1" % NODES[NODE1]]},
     ["flanneld_etcd_endpoints (http://%s:1)" % NODES[NODE1]]),
    ("R16", "flanneld", {"flanneld_iface_regex": {"a": "b"}},
     ["flanneld_iface_regex", "unable to convert to list"]),
    ("R17", "docker", {"docker_bip": "10.0.0.1"},
     ["docker_bip (10.0.0.1): must be ADDRESS/PREFIX"]),
    ("R18", "docker", {"docker_mtu": 20},
     ["docker_mtu (20): must be a whole number between 68 and 65535"]),
    ("R19", "docker", {"docker_mtu": "big"},
     ["docker_mtu (big): must be a whole number between 68 and 65535"]),
    ("R20", "docker", {"docker_ip_masq": "maybe"},
     ["docker_ip_masq (maybe): must be auto, true or false"]),
    ("R21", "docker", {"docker_daemon_options": "x"},
     ["docker_daemon_options", "unable to convert to dict"]),
    ("R22", "docker", {"docker_ready_retries": "many"},
     ["docker_ready_retries", "unable to convert to int"]),
    ("R23", "forward", {"forward_mode": "bogus"},
     ["forward_mode must be one of: policy, rules, got: bogus"]),
    ("R24", "forward", {"forward_networks": ["not-a-cidr"]},
     ["forward_networks (not-a-cidr): every entry must be an IPv4 network ADDRESS/PREFIX"]),
    ("R25", "forward", {"forward_mode": "rules", "forward_networks": []},
     ["forward_networks", "rules mode needs at least one"]),
    ("R26", "forward", {"forward_docker_dropin": "perhaps"},
     ["forward_docker_dropin", "unable to convert to bool"]),
    ("R27", "forward", {"forward_remove_policy": "REJECT"},
     ["forward_remove_policy must be one of", "got: REJECT"]),
    ("R28", "etcd", {"etcd_install_method": "snap"},
     ["etcd_install_method must be one of: package, release, got: snap"]),
    ("R29", "etcd", {"etcd_client_port": "abc"},
     ["etcd_client_port", "unable to convert to int"]),
    ("R30", "etcd", {"etcd_enable_v2": "perhaps"},
     ["etcd_enable_v2", "unable to convert to bool"]),
    ("R31", "etcd", {"etcd_extra_env": "x"},
     ["etcd_extra_env", "unable to convert to dict"]),
    ("R32", "etcd", {"etcd_address_variable": "no_such_var"},
     ["every member of it needs the inventory variable 'no_such_var'"]),
    ("R33", "flanneld", {"flanneld_subnet_lease_renew_margin": 0},
     ["flanneld_subnet_lease_renew_margin: invalid value '0' for -subnet-lease-renew-margin: must be between 1 and "
      "1439 minutes"]),
    ("R34", "flanneld", {"flanneld_healthz_port": 70000},
     ["flanneld_healthz_port: invalid value '70000' for -healthz-port: must be between 0 (off) and 65535"]),
    ("R35", "flanneld", {"flanneld_reconcile_interval": 0},
     ["flanneld_reconcile_interval: invalid value '0' for -reconcile-interval: must be above 0 seconds"]),
    ("R36", "site", {"network_config_flannel": config_with(Netwrok="10.0.0.0/8")},
     ['network_config_flannel.Netwrok: unknown key (did you mean \\"Network\\"?']),
    ("R44", "site", {"network_config_flannel": {"Network": "192.168.0.0/16", "Backend": {"Type": "vxlan"}}},
     ["network_config_flannel.Network: 192.168.0.0/16 contains the address %s of host %s: " % (NODES[NODE1], NODE1) +
      "the overlay must not cover the hosts' own network"]),
    ("R46", "site", {"network_config_flannel": backend(Padding="x" * (4 << 20))},
     ["network_config_flannel: is %d bytes of JSON, above the limit of 65536 bytes"
      % len(json.dumps(backend(Padding="x" * (4 << 20)), separators=(",", ":")))]),
    ("R49", "flanneld", {"flanneld_etcd_client_port": "abc"},
     ["flanneld_etcd_client_port", "unable to convert to int"]),
    ("R50", "flanneld", {"flanneld_etcd_client_port": 70000},
     ["flanneld_etcd_client_port: 70000 is not a TCP port (a whole number from 1 to 65535)"]),
    ("R51", "network_config", {"network_config_etcd_client_port": 0},
     ["network_config_etcd_client_port: 0 is not a TCP port (a whole number from 1 to 65535)"]),
    ("R52", "flanneld", {"flanneld_etcd_username": "flannel", "flanneld_etcd_password": "pass\nword"},
     ["flanneld_etcd_password: holds a newline, which systemd cannot pass to the agent unchanged"]),
    ("R53", "flanneld", {"flanneld_etcd_username": "flannel", "flanneld_etcd_password": "pass\u0000word"},
     ["flanneld_etcd_password: holds a NUL character, which systemd cannot pass to the agent unchanged"]),
    ("R54", "flanneld", {"flanneld_iface_regex": ["^eth0$", "^eth1\r$"]},
     ["flanneld_iface_regex: holds a carriage return, which systemd cannot pass to the agent unchanged"]),
    ("R55", "flanneld", {"flanneld_metrics_port": 8471},
     ["flanneld_metrics_port: invalid value 8471 for -metrics-port: it is the -healthz-port"]),
    ("R56", "flanneld", {"flanneld_metrics_port": 70000},
     ["flanneld_metrics_port: invalid value '70000' for -metrics-port: must be between 0 (off) and 65535"]),
    ("R57", "flanneld", {"flanneld_etcd_prefix": "/coreos.com/net work"},
     ["flanneld_etcd_prefix: invalid value '/coreos.com/net work' for -etcd-prefix: must be a key path"]),
    ("R58", "flanneld", {"flanneld_vxlan_offload": "maybe"},
     ["flanneld_vxlan_offload: invalid value 'maybe' for -vxlan-offload: must be auto, on or off"]),
]


ROLE_PARAMS = [pytest.param(*case, id=case[0]) for case in ROLE_CASES]


# Role cases run side by side (issue 25): a lab run waits on its hosts far more than it computes
# (a no-change site.yml takes about 0.5 of a core on the controller), so four at a time take
# about a third of the time of one after the other.
ROLE_WORKERS = 4


def run_role_case(case_id, target, extra_vars, directory, inventories):
    """(rc, output) of the case's ansible-playbook run (site.yml, or one role on the first node)."""
    if target == "site":
        playbook, variables = SITE, dict(extra_vars)
    else:
        playbook = ROLE
        variables = dict(extra_vars, integration_role=target, integration_hosts=NODE1)
    # A command-line argument holds at most 128 KiB: larger extra vars go through a file.
    options = []
    if len(json.dumps(variables)) > 100000:
        path = os.path.join(directory, "%s-vars.json" % case_id)
        with open(path, "w") as handle:
            handle.write(json.dumps(variables))
        options, variables = ["-e", "@%s" % path], None
    return ansible_playbook(options + [playbook], extra_vars=variables, inventories=inventories)


@pytest.fixture(scope="module")
def role_runs(request, lab, tmp_path_factory):
    """Every selected role case run on the lab, held for them all (nothing else runs on it
    meanwhile), ROLE_WORKERS at a time: {case id: (rc, output)}, and whether the lab is the same
    after them all as before (the etcd keyspace and each node's state). When it is not, each case
    is run again alone between two snapshots, so that the one that changed the lab is named."""
    selected = [item.callspec.params for item in request.session.items
                if getattr(item, "originalname", None) == "test_bad_role_variable_is_rejected_and_changes_nothing"]
    directory = str(tmp_path_factory.mktemp("role-cases"))
    with lab():
        ensure_lab()
        inventories = lab_inventories()
        before = lab_snapshot()
        with concurrent.futures.ThreadPoolExecutor(ROLE_WORKERS) as pool:
            futures = dict((case["case_id"], pool.submit(run_role_case, case["case_id"], case["target"],
                                                         case["extra_vars"], directory, inventories))
                           for case in selected)
            results = dict((case_id, future.result()) for case_id, future in futures.items())
        changed = {}
        if lab_snapshot() != before:
            for case in selected:
                alone_before = lab_snapshot()
                run_role_case(case["case_id"], case["target"], case["extra_vars"], directory, inventories)
                changed[case["case_id"]] = lab_snapshot() != alone_before
    return {"results": results, "changed": changed}


@pytest.mark.parametrize("case_id, target, extra_vars, fragments", ROLE_PARAMS)
def test_bad_role_variable_is_rejected_and_changes_nothing(role_runs, case_id, target, extra_vars, fragments):
    rc, output = role_runs["results"][case_id]
    assert rc != 0, "%s: %s was accepted:\n%s" % (case_id, extra_vars, output[-3000:])
    for fragment in fragments:
        assert fragment in output, "%s: %r not in the output:\n%s" % (case_id, fragment, output[-3000:])
    # The lab the same after all the cases as before them; when it was not, this case run again alone.
    changed = role_runs["changed"]
    assert not changed.get(case_id), "%s changed the lab" % case_id
    assert not changed or any(changed.values()), \
        "the lab changed while the role cases ran side by side, and no case changed it run alone"


# ---- module arguments, on the controller against the tests' etcd ----------------------------

SEED_LEASE = ("10.20.16.0-20", {"PublicIP": "192.168.205.99", "BackendType": "vxlan",
                                "BackendData": {"VtepMAC": "02:00:00:00:00:99"}})


def etcd_put(endpoint, key, value):
    body = urllib.parse.urlencode({"value": value}).encode()
    request = urllib.request.Request(endpoint + "/v2/keys" + key, data=body, method="PUT")
    urllib.request.urlopen(request, timeout=5).read()


def etcd_dump(endpoint):
    """Every key of the tests' etcd with its value."""
    url = urllib.parse.urlsplit(endpoint)
    listing = etcd.Client(host=url.hostname, port=url.port, protocol=url.scheme).read("/", recursive=True, sorted=True)
    return dict((node.key, node.value) for node in listing.leaves if not node.dir)


def controller_state():
    links = subprocess.run(["ip", "-j", "link", "show", "type", "vxlan"], stdout=subprocess.PIPE, text=True,
                           check=True).stdout
    flannel = sorted(link["ifname"] for link in json.loads(links or "[]") if link["ifname"].startswith("flannel."))
    return {"flannel_links": flannel, "subnet_env": os.path.exists("/run/flannel/subnet.env")}


# (id, module, arguments (endpoints/prefix added for the etcd modules), fragments)
MODULE_CASES = [
    ("M1", "network_config", {"config": "{not json"}, ["config: is not valid JSON"]),
    ("M2", "network_config", {"config": backend(VNI=16777216), "config_name": "net"},
     ["net.Backend.VNI: must be between 1 and 16777215"]),
    ("M3", "network_config", {"config": LAB_CONFIG, "bogus": 1}, ["Invalid options", "bogus"]),
    ("M4", "network_config", {"config": LAB_CONFIG, "report_leases": "perhaps"},
     ["report_leases", "unable to convert to bool"]),
    ("M5", "lease", {"state": "present", "public_ip": ["192.168.205.99"]},
     ["value of state must be one of: absent, got: present"]),
    ("M6", "lease", {"public_ip": ["192.168.205.99"], "timeout": "soon"},
     ["timeout", "unable to convert to float"]),
    ("M7", "lease", {"public_ip": ["192.168.205.99"], "cert_file": "/nonexistent/client.pem"},
     ["parameters are required together: cert_file, key_file"]),
    ("M8", "lease_info", {"bogus": 1}, ["Unsupported parameters", "bogus"]),
    ("M9", "lease_info", {"endpoints": {"a": "b"}}, ["endpoints", "unable to convert to list"]),
    ("M10", "overlay_info", {"vni": "abc"}, ["vni", "unable to convert to int"]),
    ("M11", "overlay_info", {"vni": 100, "peers": "x"}, ["peers", "dict"]),
    ("M12", "overlay_info", {"vni": 100, "bogus": 1}, ["Unsupported parameters", "bogus"]),
    ("M13", "overlay_info", {"subnet_file": "/run/flannel/subnet.env"}, ["one of the following is required: vni, device"]),
    ("M14", "network_config", {"config": '{"Network": "10.0.0.0/8", "Backend": ' + '{"x":' * 10000 + "1"
                                         + "}" * 10001},
     ["config: nests objects and lists more than 8 levels deep"]),
    ("M15", "network_config", {"config": backend(Padding="x" * (4 << 20))},
     ["config: is %d bytes of JSON, above the limit of 65536 bytes"
      % len(json.dumps(backend(Padding="x" * (4 << 20)), separators=(",", ":")))]),
    ("M16", "network_config", {"config": ["10.0.0.0/8"]},
     ["config: must be a JSON object (a dictionary) or JSON text of one, got a list"]),
    ("M17", "network_config", {"config": config_with(Netwrok="10.0.0.0/8")},
     ['Netwrok: unknown key (did you mean \\"Network\\"?']),
    ("M18", "network_config", {"config": LAB_CONFIG, "host_addresses": {"node9": "10.20.0.5"}},
     ["Network: 10.0.0.0/8 contains the address 10.20.0.5 of host node9"]),
    ("M19", "overlay_info", {"wireguard": False}, ["one of the following is required: vni, device"]),
]


@pytest.mark.parametrize("case_id, module, arguments, fragments", MODULE_CASES,
                         ids=[case[0] for case in MODULE_CASES])
def test_bad_module_argument_is_rejected_and_changes_nothing(etcd_endpoint, tmp_path, case_id, module, arguments,
                                                             fragments):
    etcd_put(etcd_endpoint, "/coreos.com/network/config", json.dumps(LAB_CONFIG))
    etcd_put(etcd_endpoint, "/coreos.com/network/subnets/" + SEED_LEASE[0], json.dumps(SEED_LEASE[1]))
    if module != "overlay_info":
        arguments = dict({"endpoints": [etcd_endpoint], "prefix": "/coreos.com/network"}, **arguments)
    playbook = tmp_path / "module.yml"
    # JSON is YAML: the arguments are written literally, not templated.
    playbook.write_text(json.dumps([{
        "name": "Call one module with the arguments under test", "hosts": "localhost", "connection": "local",
        "gather_facts": False, "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "Call netlab.flannel." + module, "netlab.flannel." + module: arguments}]}]))
    before = (etcd_dump(etcd_endpoint), controller_state())
    rc, output = ansible_playbook([str(playbook)], inventories=["localhost,"])
    after = (etcd_dump(etcd_endpoint), controller_state())
    assert rc != 0, "%s: %s was accepted:\n%s" % (case_id, arguments, output[-3000:])
    for fragment in fragments:
        assert fragment in output, "%s: %r not in the output:\n%s" % (case_id, fragment, output[-3000:])
    assert before[0]["/coreos.com/network/subnets/" + SEED_LEASE[0]], "the seeded lease is missing"
    assert after == before, "%s changed etcd or the controller" % case_id
