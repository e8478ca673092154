"""The flanneld-compatible agent's core, shared by the agent, the modules and the action plugin.

Pure Python with no Ansible imports, so the same files also run as the standalone agent.
"""

VERSION = "1.0.0"

# Third-party libraries the core needs, by import name -> PyPI name. The core imports them
# guarded so that Ansible can report a missing one cleanly instead of a traceback.
REQUIRED_LIBRARIES = {"etcd": "python-etcd", "netaddr": "netaddr", "pyroute2": "pyroute2", "urllib3": "urllib3"}


def missing_libraries(names=None):
    """PyPI names of the required libraries (or of `names`) that cannot be imported."""
    import importlib

    missing = []
    for module_name in names or sorted(REQUIRED_LIBRARIES):
        try:
            importlib.import_module(module_name)
        except ImportError:
            missing.append(REQUIRED_LIBRARIES.get(module_name, module_name))
    return missing
