"""The flanneld-compatible agent's core, shared by the agent, the modules and the action plugin.

Pure Python with no Ansible imports, so the same files also run as the standalone agent.
"""

VERSION = "1.0.0"
