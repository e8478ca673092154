"""subnet.env: flanneld's exact content, atomic writes, and reading the previous subnet back."""

import os

from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.subnet_env import (
    parse_subnet_env, previous_subnet, render_subnet_env, write_subnet_env)


def test_exact_content():
    text = render_subnet_env(IPNetwork("10.0.0.0/8"), IPNetwork("10.15.64.0/20"), 1450, False)
    assert text == "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.15.64.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    assert "FLANNEL_IPMASQ=true" in render_subnet_env(IPNetwork("10.0.0.0/8"), IPNetwork("10.1.0.0/20"), 1450, True)


def test_write_is_atomic_and_reports_change(tmp_path):
    path = str(tmp_path / "run" / "flannel" / "subnet.env")
    text = render_subnet_env(IPNetwork("10.0.0.0/8"), IPNetwork("10.15.64.0/20"), 1450, False)
    assert write_subnet_env(path, text) is True
    assert write_subnet_env(path, text) is False
    assert open(path).read() == text
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert os.listdir(os.path.dirname(path)) == ["subnet.env"]
    assert previous_subnet(path) == IPNetwork("10.15.64.0/20")


def test_previous_subnet_tolerates_missing_and_garbage(tmp_path):
    assert previous_subnet(str(tmp_path / "absent")) is None
    bad = tmp_path / "bad.env"
    bad.write_text("FLANNEL_SUBNET=nonsense\n")
    assert previous_subnet(str(bad)) is None


def test_parse_tolerates_shell_forms():
    assert parse_subnet_env("# c\nexport FLANNEL_MTU='1450'\n\nFLANNEL_SUBNET=\"10.1.0.1/20\"\n") == {
        "FLANNEL_MTU": "1450", "FLANNEL_SUBNET": "10.1.0.1/20"}
