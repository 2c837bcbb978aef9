"""platform/env.py: typed settings from the environment; bad values stop start-up naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from saas_platform.lib.env import env_bool, env_hostname, env_int, env_url

from tests.workers import REPO, worker_environment

VAR = "SAAS_TEST_ENV_VALUE"


@pytest.fixture
def setenv(monkeypatch):
    def _set(value: str) -> None:
        monkeypatch.setenv(VAR, value)

    monkeypatch.delenv(VAR, raising=False)
    return _set


# --- env_bool -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "On", " true "])
def test_env_bool_reads_true_values(setenv, raw):
    setenv(raw)
    assert env_bool(VAR, default=False) is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF", " false "])
def test_env_bool_reads_false_values(setenv, raw):
    setenv(raw)
    assert env_bool(VAR, default=True) is False


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_uses_the_default_when_unset(setenv, default):
    assert env_bool(VAR, default=default) is default


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_uses_the_default_when_blank(setenv, default):
    # `SECURE_COOKIES=` in an env file must not silently turn a default-on setting off.
    setenv("  ")
    assert env_bool(VAR, default=default) is default


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "y e s", "enabled"])
def test_env_bool_rejects_other_values_naming_the_variable(setenv, raw):
    setenv(raw)
    with pytest.raises(ImproperlyConfigured, match=VAR) as excinfo:
        env_bool(VAR)
    assert repr(raw) in str(excinfo.value)


# --- env_int --------------------------------------------------------------------------------


def test_env_int_reads_a_whole_number(setenv):
    setenv(" 42 ")
    assert env_int(VAR, 7) == 42


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_env_int_uses_the_default_when_unset_or_blank(setenv, raw):
    if raw is not None:
        setenv(raw)
    assert env_int(VAR, 7) == 7


@pytest.mark.parametrize("raw", ["1.5", "ten", "0x10", "5s"])
def test_env_int_rejects_a_value_that_is_not_a_whole_number(setenv, raw):
    setenv(raw)
    with pytest.raises(ImproperlyConfigured, match=f"{VAR} must be a whole number"):
        env_int(VAR, 7)


def test_env_int_rejects_a_value_below_the_minimum(setenv):
    setenv("0")
    with pytest.raises(ImproperlyConfigured, match=f"{VAR} must be at least 1"):
        env_int(VAR, 7, minimum=1)


def test_env_int_accepts_the_minimum_itself(setenv):
    setenv("1")
    assert env_int(VAR, 7, minimum=1) == 1


# --- env_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://user:pw@db.example:5432/app",
        "postgresql://db.example/app",
        "postgres:///app?host=/run/postgresql",
    ],
)
def test_env_url_accepts_urls_with_an_allowed_scheme(setenv, raw):
    setenv(raw)
    assert env_url(VAR, schemes=("postgres", "postgresql")) == raw


def test_env_url_strips_surrounding_whitespace(setenv):
    setenv("  redis://cache:6379/0\n")
    assert env_url(VAR, schemes=("redis",)) == "redis://cache:6379/0"


def test_env_url_returns_empty_when_unset_and_optional(setenv):
    assert env_url(VAR, schemes=("http", "https")) == ""


def test_env_url_requires_a_value_when_required(setenv):
    setenv("   ")
    with pytest.raises(ImproperlyConfigured, match=f"{VAR} must be set"):
        env_url(VAR, schemes=("redis",), required=True)


@pytest.mark.parametrize("raw", ["mysql://x", "ftp://x", "db.example:5432/app", "x"])
def test_env_url_rejects_another_scheme_naming_the_variable(setenv, raw):
    setenv(raw)
    with pytest.raises(ImproperlyConfigured, match=VAR) as excinfo:
        env_url(VAR, schemes=("postgres", "postgresql"))
    assert "postgres://" in str(excinfo.value)


@pytest.mark.parametrize("raw", ["redis://cache:99999/0", "redis://cache:port/0", "redis://h:-1"])
def test_env_url_rejects_an_invalid_port_naming_the_variable(setenv, raw):
    setenv(raw)
    with pytest.raises(ImproperlyConfigured, match=f"{VAR} has an invalid port"):
        env_url(VAR, schemes=("redis",))


# --- env_hostname ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Jobs.Example.COM", "jobs.example.com"),
        ("  localhost ", "localhost"),
        ("a-b.c1.example", "a-b.c1.example"),
    ],
)
def test_env_hostname_accepts_and_lowercases_host_names(setenv, raw, expected):
    setenv(raw)
    assert env_hostname(VAR, "localhost") == expected


def test_env_hostname_uses_the_default_when_unset(setenv):
    assert env_hostname(VAR, "Default.Example") == "default.example"


@pytest.mark.parametrize(
    "raw",
    [
        "bad domain!",
        "-leading.example",
        "trailing-.example",
        "double..dot",
        "example.com:8000",
        "https://example.com",
        "under_score.example",
        "a" * 64 + ".example",
        "",
    ],
)
def test_env_hostname_rejects_what_is_not_a_host_name_naming_the_variable(setenv, raw):
    setenv(raw)
    with pytest.raises(ImproperlyConfigured, match=f"{VAR} must be a host name"):
        env_hostname(VAR, "localhost")


# --- start-up, for real ---------------------------------------------------------------------


def _start_django(**changes: str | None) -> subprocess.CompletedProcess[str]:
    env = worker_environment()
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The exception's own message (the last line of the traceback), not the quoted source."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_start_up_succeeds_with_the_test_environment():
    result = _start_django()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DEBUG": "false", "SECRET_KEY": None}, "SECRET_KEY"),
        ({"DEBUG": "false", "SECRET_KEY": ""}, "SECRET_KEY"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"REDIS_URL": "redis://cache:port/0"}, "REDIS_URL"),
        ({"BASE_DOMAIN": "bad domain!"}, "BASE_DOMAIN"),
        ({"SENTRY_DSN": "ftp://x"}, "SENTRY_DSN"),
        ({"TENANT_MIGRATE_PROCESSES": "many"}, "TENANT_MIGRATE_PROCESSES"),
    ],
    ids=lambda value: value if isinstance(value, str) else ",".join(value),
)
def test_start_up_stops_with_a_message_naming_the_variable(changes, variable):
    result = _start_django(**changes)
    assert result.returncode != 0
    error = _error_line(result)
    assert error.startswith("django.core.exceptions.ImproperlyConfigured"), result.stderr
    assert variable in error


def test_start_up_without_secret_key_is_fine_in_debug():
    result = _start_django(DEBUG="true", SECRET_KEY=None)
    assert result.returncode == 0, result.stderr


def test_start_up_stops_naming_sentry_dsn_for_a_malformed_dsn():
    result = _start_django(SENTRY_DSN="https://sentry.example/1")
    assert result.returncode != 0
    assert "SENTRY_DSN" in _error_line(result)
