"""Run the collection's modules in-process, and its action plugins with modules run in-process."""

from __future__ import annotations

import importlib
from unittest import mock

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleDone(Exception):
    """Raised by the patched exit_json/fail_json to carry the module's result out of main()."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise ModuleDone(kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs.update(failed=True, msg=msg)
    raise ModuleDone(kwargs)


def run_module(name, args, check_mode=False, diff=False):
    """Run netlab.flannel.<name>'s main() with `args`; return its result dict."""
    module = importlib.import_module("ansible_collections.netlab.flannel.plugins.modules." + name)
    module_args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    with patch_module_args(module_args), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        with pytest.raises(ModuleDone) as done:
            module.main()
    return done.value.result


def make_action(name, args, check_mode=False, diff=False):
    """netlab.flannel.<name>'s action plugin, whose _execute_module runs our modules in-process.

    Only the transport to the target is replaced; the modules do their real work.
    """
    action_module = importlib.import_module("ansible_collections.netlab.flannel.plugins.action." + name)
    task = mock.MagicMock()
    task.action = "netlab.flannel." + name
    task.args = dict(args)
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = diff
    connection = mock.MagicMock()
    connection._shell.tmpdir = None
    action = action_module.ActionModule(task, connection, mock.MagicMock(), loader=None, templar=None,
                                        shared_loader_obj=None)
    action.executed = []

    def execute_module(module_name=None, module_args=None, task_vars=None, **kwargs):
        prefix = "netlab.flannel."
        assert module_name.startswith(prefix), module_name
        action.executed.append((module_name, dict(module_args)))
        return run_module(module_name[len(prefix):], module_args, check_mode=check_mode, diff=diff)

    action._execute_module = execute_module
    action._remove_tmp_path = mock.MagicMock()
    return action


@pytest.fixture(name="run_module")
def run_module_fixture():
    """run_module(name, args, check_mode=False, diff=False) -> result dict."""
    return run_module


@pytest.fixture(name="make_action")
def make_action_fixture():
    """make_action(name, args, check_mode=False, diff=False) -> action plugin instance."""
    return make_action
