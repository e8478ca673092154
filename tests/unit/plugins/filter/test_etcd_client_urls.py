"""netlab.flannel.etcd_client_urls: the one place the roles and playbooks build etcd client URLs."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.netlab.flannel.plugins.filter.etcd_client_urls import FilterModule, etcd_client_urls

HOSTVARS = {"node1": {"netlab_lab_address": "192.168.205.10", "other": "10.1.1.1"},
            "node2": {"netlab_lab_address": "192.168.205.11"}}


def test_urls_follow_the_hosts_order_with_http_by_default():
    assert etcd_client_urls(["node2", "node1"], HOSTVARS) == ["http://192.168.205.11:2379",
                                                              "http://192.168.205.10:2379"]


@pytest.mark.parametrize("tls", [True, "true", "yes", 1])
def test_tls_in_any_boolean_spelling_gives_https(tls):
    assert etcd_client_urls(["node1"], HOSTVARS, "netlab_lab_address", "4001", tls) == ["https://192.168.205.10:4001"]


@pytest.mark.parametrize("tls", [False, "false", "no", 0, None])
def test_tls_off_gives_http(tls):
    assert etcd_client_urls(["node1"], HOSTVARS, tls=tls) == ["http://192.168.205.10:2379"]


def test_another_address_variable_is_used():
    assert etcd_client_urls(["node1"], HOSTVARS, "other", 2379) == ["http://10.1.1.1:2379"]


def test_no_hosts_give_no_urls():
    assert etcd_client_urls([], HOSTVARS) == []


def test_a_host_without_the_address_variable_is_named():
    with pytest.raises(AnsibleFilterError, match="node2: every etcd member needs the inventory variable 'other'"):
        etcd_client_urls(["node1", "node2"], HOSTVARS, "other")


def test_a_host_missing_from_hostvars_is_named():
    with pytest.raises(AnsibleFilterError, match="node3: every etcd member needs"):
        etcd_client_urls(["node3"], HOSTVARS)


@pytest.mark.parametrize("port", ["abc", "", " 2379", "2379.5", 2379.5, True, None, 0, "0", 65536, -1, "\u00b2"])
def test_a_bad_port_is_named_with_the_rule(port):
    with pytest.raises(AnsibleFilterError) as raised:
        etcd_client_urls(["node1"], HOSTVARS, port=port)
    assert str(raised.value) == "etcd_client_urls: port must be a whole number from 1 to 65535, got %r" % (port,)


@pytest.mark.parametrize("port, url", [(1, "http://192.168.205.10:1"), ("65535", "http://192.168.205.10:65535")])
def test_the_port_range_ends_are_taken(port, url):
    assert etcd_client_urls(["node1"], HOSTVARS, port=port) == [url]


def test_the_filter_is_registered_under_its_name():
    assert FilterModule().filters()["etcd_client_urls"] is etcd_client_urls
