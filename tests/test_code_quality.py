"""ruff and mypy stay clean: `make test` fails on a lint or type error, as CI should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env, check=False
    )


def test_ruff_finds_nothing() -> None:
    result = _run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted() -> None:
    result = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    # mypy's Django plugin imports the settings; these values are read, never connected to.
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": "postgres://lint/lint",
        "REDIS_URL": "redis://lint:6379/0",
    }
    result = _run(
        str(BIN / "mypy"), "-p", "saas_platform", "-p", "tenants", "-p", "jobs", "-p", "billing",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
