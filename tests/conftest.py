"""Shared fixtures: one phrase cache per test run, and the real sound server; and on CI,
no test may skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.pulse import pulse_server  # noqa: F401  (a fixture)

# The suite speaks with espeak-ng unless a test asks for piper: it is fast and the timing
# tests were measured with it. The default engine itself (piper when installed) is tested
# in test_piper.py with this variable removed.
os.environ.setdefault("VOICECOACH_ENGINE", "espeak")

REPO = Path(__file__).resolve().parent.parent


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Under CI=true a skip is a failure: a missing server, tool or permission there would
    otherwise pass the run quietly with the tests that need it never run. The skip's own
    reason is kept in the failure. (An expected failure, xfail, stays as it is.)"""
    report: pytest.TestReport = yield
    return _no_skip_on_ci(report)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    """The same for a whole module skipped as it is collected (`allow_module_level`)."""
    report: pytest.CollectReport = yield
    return _no_skip_on_ci(report)


R = TypeVar("R", pytest.TestReport, pytest.CollectReport)


def _no_skip_on_ci(report: R) -> R:
    if report.skipped and _on_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"
    return report


def _private_dir(name: str, env: str, factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = factory.mktemp(name)
    old = os.environ.get(env)
    os.environ[env] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(env, None)
    else:
        os.environ[env] = old


@pytest.fixture(scope="session", autouse=True)
def phrase_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test shares one fresh phrase cache: real espeak-ng, synthesized once per run."""
    yield from _private_dir("phrase-cache", "VOICECOACH_CACHE_DIR", tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Plays record their history here, never in the person's own data folder."""
    yield from _private_dir("data", "VOICECOACH_DATA_DIR", tmp_path_factory)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)
    return REPO
