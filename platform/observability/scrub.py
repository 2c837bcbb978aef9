"""Keeping secrets and tenants' data out of Sentry events: every part of the event, not only the
keys sentry-sdk's own scrubber knows.

The SDK already leaves out cookies and user data (send_default_pii off), but a stack frame's
local variables are reprs: `claimed = ClaimedJob(type='demo.fail', args={'message': ...})` went
out whole, because neither its name nor its value is on any deny list. So the walk does three
things to every string and mapping it meets, frames, breadcrumbs, extra, contexts and request
alike:
- a value under a sensitive name (headers, bodies, job arguments and results) is replaced;
- an API key (`tjp_...`) anywhere in any string is replaced;
- any argument or result value of the job in hand (saas_platform.lib.telemetry.secrets) is
  replaced wherever it appears, inside a repr too.
The exception's own message is left as the job raised it: it is what the on-call engineer reads,
and the job chose to put its data there (API keys are still replaced in it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from saas_platform.lib import telemetry

FILTERED = "[Filtered]"

# Compared lower-case, `-` as `_`. Names of HTTP headers, of request parts, and of the runner's
# and job types' variables that hold a job's arguments or result.
SENSITIVE_NAMES = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "cookies",
        "set_cookie",
        "x_api_key",
        "api_key",
        "apikey",
        "key",
        "plaintext",
        "password",
        "secret",
        "token",
        "sessionid",
        "csrftoken",
        "body",
        "data",
        "args",
        "kwargs",
        "arguments",
        "result",
        "results",
        "claimed",
        "progress",
        "payload",
        "encoded",
        "encoded_result",
    }
)
# "data" is how breadcrumbs and spans carry their details, not only a request's body: there it
# is walked like anything else rather than dropped.
_DATA_KEPT_IN = ("breadcrumbs", "spans")

API_KEY_PATTERN = re.compile(r"tjp_[A-Za-z0-9_\-]{8,}")


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")


@functools.lru_cache(maxsize=64)
def _secrets_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    # Longest first, so that a value containing a shorter one is replaced whole. Cached: every
    # breadcrumb of a task (a log line, a query, a Redis command) is scrubbed with the same set.
    ordered = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None


class _Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = _secrets_pattern(frozenset(secrets))

    def text(self, value: str, *, keep_secrets: bool = False) -> str:
        value = API_KEY_PATTERN.sub(FILTERED, value)
        if self.secrets is not None and not keep_secrets:
            value = self.secrets.sub(FILTERED, value)
        return value

    def walk(self, value: Any, path: tuple[str, ...] = ()) -> Any:
        if isinstance(value, str):
            return self.text(value, keep_secrets=_is_exception_message(path))
        if isinstance(value, dict):
            for key in list(value):
                name = _normal(str(key))
                if name in SENSITIVE_NAMES and not (
                    name == "data" and any(part in _DATA_KEPT_IN for part in path)
                ):
                    value[key] = FILTERED
                else:
                    value[key] = self.walk(value[key], (*path, str(key)))
            return value
        if isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = self.walk(item, path)
            return value
        if isinstance(value, tuple):
            return tuple(self.walk(item, path) for item in value)
        return value  # numbers, None, the SDK's AnnotatedValue markers


def _is_exception_message(path: tuple[str, ...]) -> bool:
    # event["exception"]["values"][n]["value"]: lists add no path part.
    return path[-3:] == ("exception", "values", "value")


def scrub_event(event: dict[str, Any]) -> dict[str, Any]:
    scrubbed: dict[str, Any] = _Scrubber(telemetry.secrets()).walk(event)
    return scrubbed
