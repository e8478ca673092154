"""The README's flag table stays true: every agent flag, and only those, with the default -help
shows and the FLANNELD_* variable the agent reads."""

import os
import re

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import FLAGS, parse_args, usage_text

README = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")


def _table_rows():
    """{flag name: (default cell, environment cell)} from the README's `| flag | default | meaning |
    environment |` rows, cells stripped."""
    with open(README) as handle:
        rows = re.findall(r"^\| `-([a-z0-9-]+)` \|([^|]*)\|[^|]*\|([^|]*)\|$", handle.read(), re.MULTILINE)
    return dict((name, (default.strip(), environment.strip())) for name, default, environment in rows)


def test_every_flag_is_documented_once():
    assert sorted(_table_rows()) == sorted(flag.name for flag in FLAGS)


@pytest.mark.parametrize("flag", FLAGS, ids=lambda flag: flag.name)
def test_default_column_is_the_code_s_default(flag):
    default = _table_rows()[flag.name][0]
    assert default.replace("`", "") == flag.shown_default
    if flag.shown_default and flag.default_text is None:  # a value, not a description: in backticks
        assert default == "`%s`" % flag.shown_default


@pytest.mark.parametrize("flag", FLAGS, ids=lambda flag: flag.name)
def test_environment_column_is_the_variable_the_agent_reads(flag):
    environment = _table_rows()[flag.name][1]
    if flag.env_name is None:
        assert environment == ""
        return
    assert environment == "`%s`" % flag.env_name
    value = {bool: "true", int: "7"}.get(flag.kind, "x")
    try:
        parsed = getattr(parse_args([], environ={flag.env_name: value}), flag.attribute)
    except Exception as error:  # the flag's own check refused "x": it was read
        assert flag.env_name in str(error)
        return
    assert parsed in ([value], value, True, 7), flag.name


def test_help_shows_the_same_defaults_and_variables():
    text = usage_text()
    for flag in FLAGS:
        line = text.split("  -%s" % flag.name, 1)[1].split("\n")[1]
        assert ("(default %s)" % flag.shown_default in line) == bool(flag.shown_default), flag.name
        assert ("[env %s]" % flag.env_name in line) == bool(flag.env_name), flag.name
