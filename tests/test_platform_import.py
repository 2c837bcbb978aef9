"""platform/ must not shadow the standard library, and the CLI entry points must find the app."""

from __future__ import annotations

import subprocess
import sys

from tests.workers import CELERY, REPO, worker_environment


def test_stdlib_platform_still_works_from_the_repo_root() -> None:
    code = "import platform, uuid, celery, kombu; print(platform.python_implementation())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() in {"CPython", "PyPy"}


def test_manage_py_runs_from_the_repo_root(tenant_db) -> None:
    out = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=worker_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "System check identified" in out.stdout + out.stderr
    assert "ERROR" not in out.stderr


def test_celery_report_finds_the_app(tenant_db) -> None:
    out = subprocess.run(
        [CELERY, "-A", "saas_platform", "report"],
        cwd=REPO,
        env=worker_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "saas_platform" in out.stdout
    assert "demo.add" not in out.stderr  # no import errors about the catalogue
