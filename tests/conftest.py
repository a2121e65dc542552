"""Strict harness shared by core and GUI tests."""

from __future__ import annotations

import os
import threading

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

if os.environ.get("MONO_QUANT_HIDE_QT"):
    import tests_qt_hider  # noqa: F401  (core tests as if Qt were not installed)

    collect_ignore_glob = ["gui/*"]


@pytest.fixture(autouse=True)
def _no_leftover_threads():
    """Fail a test that leaves a Python thread running."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for t in leftover:
        t.join(timeout=5)
    still = [t.name for t in leftover if t.is_alive()]
    assert not still, f"test left threads running: {still}"
