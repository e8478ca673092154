"""Integration fixtures: the shared two-node lab (see tests/support/labtools.py)."""

import pytest

from support.labtools import ensure_lab, lab_lock, run


@pytest.fixture(scope="session")
def lab():
    """The provisioned lab; returns the lock context manager to hold around each case."""
    if run(["docker", "info"], check=False).returncode != 0:
        pytest.fail("no docker engine answers: run `make lab-prereqs` (lab/ensure-docker.sh) first")
    with lab_lock():
        ensure_lab()
    return lab_lock


def pytest_collection_modifyitems(items):
    """Cases that use the lab are marked `lab`: make test runs the others beside the lab's tiers."""
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)
