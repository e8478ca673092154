"""A bench run as `python tests/bench/<bench>.py` imports this module first: it puts on sys.path
what pytest.ini's `pythonpath` gives the tests (the checkout as the collection netlab.flannel, and
tests/ for the shared helpers in `support`), read from pytest.ini so the two never differ."""

import configparser
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_INI = configparser.ConfigParser()
_INI.read(os.path.join(ROOT, "pytest.ini"))
sys.path[:0] = [os.path.join(ROOT, entry) for entry in _INI["pytest"]["pythonpath"].split()]
