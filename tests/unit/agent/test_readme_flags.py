"""The README's flag table stays true: every agent flag, and only those, with its default."""

import os
import re

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import FLAGS

README = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")


def _table_rows():
    with open(README) as handle:
        return dict((match.group(1), match.group(2).strip()) for match in
                    re.finditer(r"^\| `-([a-z-]+)` \| ([^|]*)\|", handle.read(), re.MULTILINE))


def test_every_flag_is_documented_with_its_default():
    rows = _table_rows()
    assert sorted(rows) == sorted(flag.name for flag in FLAGS)
    for flag in FLAGS:
        if flag.kind is not bool and flag.default not in ("", [], 0):
            assert "`%s`" % flag.default in rows[flag.name], flag.name
