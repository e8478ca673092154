"""netlab.flannel.rendered_files on real files in a temporary directory."""

from __future__ import annotations

import grp
import os
import pwd
import stat

USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def entries(tmp_path, unit="[Service]\nExecStart=/bin/true\n", env="PASSWORD=s3cret\n"):
    return [dict(path=str(tmp_path / "agent.service"), content=unit, owner=USER, group=GROUP, mode="0644"),
            dict(path=str(tmp_path / "agent.env"), secret_content=env, mode="0600")]


def test_writes_new_files_then_changes_nothing(tmp_path, run_module):
    result = run_module("rendered_files", dict(files=entries(tmp_path)), diff=True)
    assert result["changed"] is True
    assert result["changed_files"] == [str(tmp_path / "agent.service"), str(tmp_path / "agent.env")]
    assert result["content_changed"] == result["changed_files"]
    assert (tmp_path / "agent.service").read_text() == "[Service]\nExecStart=/bin/true\n"
    assert (tmp_path / "agent.env").read_text() == "PASSWORD=s3cret\n"
    assert mode_of(tmp_path / "agent.service") == 0o644
    assert mode_of(tmp_path / "agent.env") == 0o600
    # The unit's content diff; the secret file's content is in no diff.
    assert result["diff"][0]["after"] == "[Service]\nExecStart=/bin/true\n"
    assert result["diff"][0]["before"] == ""
    assert "s3cret" not in repr(result["diff"])
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temporary left

    again = run_module("rendered_files", dict(files=entries(tmp_path)), diff=True)
    assert again["changed"] is False
    assert again["changed_files"] == [] and again["content_changed"] == []
    assert again["diff"] == []


def test_reports_only_the_file_that_changed(tmp_path, run_module):
    run_module("rendered_files", dict(files=entries(tmp_path)))
    result = run_module("rendered_files", dict(files=entries(tmp_path, env="PASSWORD=other\n")), diff=True)
    assert result["changed"] is True
    assert result["changed_files"] == [str(tmp_path / "agent.env")]
    assert (tmp_path / "agent.env").read_text() == "PASSWORD=other\n"
    assert "other" not in repr(result["diff"])


def test_mode_alone_changed(tmp_path, run_module):
    run_module("rendered_files", dict(files=entries(tmp_path)))
    os.chmod(tmp_path / "agent.service", 0o666)
    result = run_module("rendered_files", dict(files=entries(tmp_path)), diff=True)
    assert result["changed_files"] == [str(tmp_path / "agent.service")]
    assert result["content_changed"] == []
    assert result["diff"] == [{"before": {"path": str(tmp_path / "agent.service"), "mode": "0666"},
                               "after": {"path": str(tmp_path / "agent.service"), "mode": "0644"}}]
    assert mode_of(tmp_path / "agent.service") == 0o644


def test_check_mode_reports_and_changes_nothing(tmp_path, run_module):
    run_module("rendered_files", dict(files=entries(tmp_path)))
    os.chmod(tmp_path / "agent.env", 0o644)
    files = entries(tmp_path, unit="[Service]\nExecStart=/bin/false\n")
    result = run_module("rendered_files", dict(files=files), check_mode=True, diff=True)
    assert result["changed_files"] == [str(tmp_path / "agent.service"), str(tmp_path / "agent.env")]
    assert result["content_changed"] == [str(tmp_path / "agent.service")]
    assert result["diff"][0]["before"] == "[Service]\nExecStart=/bin/true\n"
    assert result["diff"][0]["after"] == "[Service]\nExecStart=/bin/false\n"
    assert (tmp_path / "agent.service").read_text() == "[Service]\nExecStart=/bin/true\n"
    assert mode_of(tmp_path / "agent.env") == 0o644
    # A file whose directory an earlier task would make: reported, not a failure.
    missing = [dict(path=str(tmp_path / "new" / "file"), content="x\n", mode="0644")]
    assert run_module("rendered_files", dict(files=missing), check_mode=True)["changed_files"] == [
        str(tmp_path / "new" / "file")]
    assert not (tmp_path / "new").exists()


def test_bad_entries_change_nothing(tmp_path, run_module):
    good = entries(tmp_path)[0]
    cases = [
        ([good, dict(path="relative.conf", content="x")], "each path must be absolute, got relative.conf"),
        ([good, dict(good)], "each path may be given once, got %s more than once" % good["path"]),
        ([good, dict(path=str(tmp_path / "none" / "x"), content="x")],
         "the directory of each path must exist, missing for %s" % (tmp_path / "none" / "x")),
        ([good, dict(path=str(tmp_path / "both"), content="x", secret_content="y")], "mutually exclusive"),
        ([good, dict(path=str(tmp_path / "neither"))], "one of the following is required"),
    ]
    for files, message in cases:
        result = run_module("rendered_files", dict(files=files))
        assert result["failed"] is True, files
        assert message in result["msg"], (message, result["msg"])
        assert os.listdir(tmp_path) == [], result["msg"]
