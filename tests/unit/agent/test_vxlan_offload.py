"""The vxlan offload decision: the kernel's default unless the kernel has the checksum bug."""

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import (
    decide_offload, kernel_version)


@pytest.mark.parametrize("release, version", [
    ("6.18.44-fc-v857", (6, 18)), ("5.7.0", (5, 7)), ("4.19.0-26-amd64", (4, 19)), ("weird", None)])
def test_kernel_version(release, version):
    assert kernel_version(release) == version


@pytest.mark.parametrize("release, enabled", [
    ("4.19.0-26-amd64", False), ("5.6.19", False), ("5.7.0", True), ("5.10.0-28-amd64", True),
    ("6.1.0-18-amd64", True), ("6.18.44", True), ("unknown", True)])
def test_auto_turns_offload_off_only_before_5_7(release, enabled):
    decided, reason = decide_offload("auto", release)
    assert decided is enabled
    assert reason.startswith("auto: ") and release in reason


@pytest.mark.parametrize("choice, enabled", [("on", True), ("off", False)])
def test_operator_choice_wins_on_any_kernel(choice, enabled):
    for release in ("4.19.0", "6.18.0"):
        assert decide_offload(choice, release) == (enabled, "set by -vxlan-offload=%s" % choice)


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="one of auto, on, off"):
        decide_offload("maybe", "6.1.0")
