"""Shared fixtures: one phrase cache per test run, and the real sound server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pulse import pulse_server  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def phrase_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test shares one fresh phrase cache: real espeak-ng, synthesized once per run."""
    folder = tmp_path_factory.mktemp("phrase-cache")
    old = os.environ.get("VOICECOACH_CACHE_DIR")
    os.environ["VOICECOACH_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("VOICECOACH_CACHE_DIR", None)
    else:
        os.environ["VOICECOACH_CACHE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Plays record their history here, never in the person's own data folder."""
    folder = tmp_path_factory.mktemp("data")
    old = os.environ.get("VOICECOACH_DATA_DIR")
    os.environ["VOICECOACH_DATA_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("VOICECOACH_DATA_DIR", None)
    else:
        os.environ["VOICECOACH_DATA_DIR"] = old


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)
    return REPO
