"""Integration fixtures: the shared two-node lab (see tests/support/labtools.py)."""

import pytest

from support.labtools import ensure_lab, lab_lock, restore_handed_over_lab, run


@pytest.fixture(scope="session")
def lab():
    """The provisioned lab; returns the lock context manager to hold around each case. At the end,
    a state the last case handed over (labtools.hand_over) and no case took is restored."""
    if run(["docker", "info"], check=False).returncode != 0:
        pytest.fail("no docker engine answers: run `make lab-prereqs` (lab/ensure-docker.sh) first")
    with lab_lock():
        ensure_lab()
    yield lab_lock
    restore_handed_over_lab()


def pytest_collection_modifyitems(items):
    """Cases that use the lab are marked `lab`: make test runs the others beside the lab's tiers.
    Cases marked `lab_last` run after all others, in their order (each starts from the state the
    one before it hands over, e.g. the perf smoke from the wireguard case's teardown)."""
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)
    items.sort(key=lambda item: item.get_closest_marker("lab_last") is not None)
