"""Suite-wide pytest hooks: the order in which pytest-xdist hands out the tests, and the
logging configuration each test starts with.

`make test` runs the suite on pytest-xdist workers with ``--dist load --maxschedchunk 1``: each
worker holds two tests at a time and takes the next one from the shared queue when one ends. A
few property tests take tens of seconds (the differential VPP tests about two minutes per backend)
and the rest are short. Handed out late, a long test keeps one worker busy after the others have
run out of work, so the tests marked ``long_running`` go first, by their ``rank`` (ties in pytest's
order). The differential module is rank 0: pytest groups its tests by backend (npol's two, then
acl's two), so with two workers each starts with one backend's pair while the other takes
everything else. Without xdist the order changes nothing but the order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import structlog


def _rank(item: pytest.Item) -> float:
    mark = item.get_closest_marker("long_running")
    return math.inf if mark is None else float(mark.kwargs.get("rank", 1))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # trylast: after pytest has grouped items by their parametrized module fixtures (the
    # differential tests share one simulator per backend); the sort is stable, so it keeps that
    # grouping and every other test's usual place.
    items.sort(key=_rank)


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """Every test starts with the logging configuration the session started with.

    `cli.main` (run in-process by test_scenarios) configures structlog for the process: JSON to
    the `sys.stderr` of that moment, which is that test's capture file, at level WARNING. Left
    in place, any later test in the same process that logs writes to a closed file (ValueError
    from deep inside the code under test), and `capture_logs` misses the INFO events the
    filtering logger drops. Which tests follow depends on selection and on how xdist spreads
    them, so the configuration is put back after every test.
    """
    saved = structlog.get_config()
    processors = list(saved["processors"])
    yield
    # The same list object, refilled: loggers already bound hold on to it (as capture_logs does).
    saved["processors"][:] = processors
    structlog.configure(**saved)
