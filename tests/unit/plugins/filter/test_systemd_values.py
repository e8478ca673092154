"""netlab.flannel.systemd_env_value and systemd_carry_problems: the environment file's quoting and
the refusal of what systemd cannot pass on (issue 19). The lab test (tests/integration/
test_env_quoting_lab.py) reads the values back through the nodes' systemd and the running agent."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.netlab.flannel.plugins.filter.systemd_carry_problems import (
    FilterModule as ProblemsFilters, systemd_carry_problems)
from ansible_collections.netlab.flannel.plugins.filter.systemd_env_value import (
    FilterModule as ValueFilters, systemd_env_value)


@pytest.mark.parametrize("value, line", [
    ("plain", '"plain"'),
    ("", '""'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("ends in \\", '"ends in \\\\"'),
    ('\\"', '"\\\\\\""'),
    ("$HOME ${HOME} `id` %h %% #x ;y", '"$HOME ${HOME} `id` %h %% #x ;y"'),
    ("  edge spaces\t ", '"  edge spaces\t "'),
    ("it's", "\"it's\""),
    ("\\n is two characters", '"\\\\n is two characters"'),
    ("pässwörd €", '"pässwörd €"'),
    (8471, '"8471"'),
])
def test_values_are_double_quoted_with_backslash_and_quote_escaped(value, line):
    assert systemd_env_value(value) == line


def _read_back(line):
    """How systemd's environment file parser reads a double-quoted value (src/basic/env-file.c):
    a backslash before one of " \\ ` $ stands for that character, before anything else it stays."""
    assert line[0] == line[-1] == '"'
    out, chars = [], iter(line[1:-1])
    for char in chars:
        if char == "\\":
            following = next(chars)
            out.append(following if following in '"\\`$' else "\\" + following)
        else:
            assert char != '"', "an unescaped quote would end the value: %r" % line
            out.append(char)
    return "".join(out)


@pytest.mark.parametrize("value", ['a"b', "a\\b", "\\", '"', "\\\\\"\\", "x\\$y", "\\`", " ' \" \\ $ % # ; "])
def test_the_quoted_form_reads_back_as_the_value(value):
    assert _read_back(systemd_env_value(value)) == value


@pytest.mark.parametrize("value, named", [
    ("a\nb", "a newline"),
    ("a\rb", "a carriage return"),
    ("a\x00b", "a NUL character"),
    ("\x1b[0m", "the control character U+001B"),
    ("del\x7f", "the control character U+007F"),
    ("trailing newline\n", "a newline"),
])
def test_a_value_systemd_cannot_carry_is_refused_saying_why(value, named):
    with pytest.raises(AnsibleFilterError) as raised:
        systemd_env_value(value)
    assert str(raised.value) == "systemd_env_value: the value holds %s, which systemd cannot pass to the agent " \
                                "unchanged" % named
    assert systemd_carry_problems({"flanneld_etcd_password": value}) == [
        "flanneld_etcd_password: holds %s, which systemd cannot pass to the agent unchanged" % named]


def test_text_that_is_not_utf8_is_refused():
    assert systemd_carry_problems({"v": "a\udcffb"}) == ["v: is not valid UTF-8 text, which systemd cannot pass to "
                                                         "the agent"]


@pytest.mark.parametrize("value", [None, True, ["a"], {"a": 1}])
def test_systemd_env_value_needs_a_string_or_a_number(value):
    with pytest.raises(AnsibleFilterError, match="systemd_env_value: needs a string or a number"):
        systemd_env_value(value)


def test_problems_name_each_variable_once_in_order_and_look_into_lists():
    variables = {"flanneld_iface": ["eth0", "eth\n1", "eth\r2"], "flanneld_etcd_prefix": "/coreos.com/network",
                 "flanneld_healthz_port": 8471, "flanneld_etcd_password": "pa\x00ss", "flanneld_public_ip": None,
                 "flanneld_iface_regex": []}
    assert systemd_carry_problems(variables) == [
        "flanneld_iface: holds a newline, which systemd cannot pass to the agent unchanged",
        "flanneld_etcd_password: holds a NUL character, which systemd cannot pass to the agent unchanged"]


def test_fine_values_give_no_problems():
    assert systemd_carry_problems({"a": " tab\there $HOME %h \\ \" ' ", "b": ["x", 1], "c": ""}) == []


def test_problems_need_a_mapping():
    with pytest.raises(AnsibleFilterError, match="needs a mapping of variable names to values, got list"):
        systemd_carry_problems(["a"])


def test_the_filters_are_registered_under_their_names():
    assert ValueFilters().filters()["systemd_env_value"] is systemd_env_value
    assert ProblemsFilters().filters()["systemd_carry_problems"] is systemd_carry_problems
