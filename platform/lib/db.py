"""The default database connection, typed with the methods django-tenants adds to it.

Same object as `django.db.connection` (a per-thread proxy); only the static type differs. Also
the one way hot paths send a statement together with the session state it needs (one round trip).
"""

from __future__ import annotations

import functools
import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db import DatabaseError
from django.db import connection as _connection

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    class TenantConnection(BaseDatabaseWrapper):
        tenant: Any
        schema_name: str

        def set_tenant(self, tenant: Any, include_public: bool = True) -> None: ...
        def set_schema(self, schema_name: str, include_public: bool = True) -> None: ...
        def set_schema_to_public(self) -> None: ...


connection = cast("TenantConnection", _connection)


# A session keeps this many of our prepared statements (per statement and tenant schema), the
# least recently used deallocated first. PostgreSQL 15 holds about 130 KB of plan per prepared
# claim (pg_backend_memory_contexts), so this bounds it near 8 MB per server process.
PREPARED_PER_SESSION = 64

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Executing a statement prepared earlier in the session can fail without running anything:
# it is gone (DEALLOCATE ALL or DISCARD by someone else), or a migration changed what it returns.
_STALE_PREPARED = {"26000", "0A000"}


@dataclass
class _SessionStatements:
    """Our prepared statements in one database session (one psycopg connection)."""

    names: OrderedDict[tuple[str, str], str] = field(default_factory=OrderedDict)
    made: int = 0
    # SQL the session needs before the next statement: DEALLOCATE of an evicted statement, or
    # DEALLOCATE ALL when a failure leaves us unsure which of ours exist.
    pending: list[str] = field(default_factory=list)

    def forget_all(self) -> None:
        self.names.clear()
        self.pending = ["DEALLOCATE ALL; "]


# Keyed by the driver's connection: a connection Django replaces starts with none.
_sessions: weakref.WeakKeyDictionary[Any, _SessionStatements] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=256)
def _as_prepared(sql: str) -> tuple[str, str]:
    """`sql` with psycopg's `%(name)s` placeholders as `$n` (one per occurrence, so that each
    gets its type from its own place), and the EXECUTE arguments in the same order."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        order.append(match.group(1))
        return f"${len(order)}"

    body = _PLACEHOLDER.sub(number, sql)
    return body, ", ".join(f"%({name})s" for name in order)


def _prepared_statement(sql: str) -> tuple[str, _SessionStatements]:
    """SQL that runs `sql` as a statement prepared in this session for the active schema, and
    the session's registry. The name is per schema: a plan PostgreSQL caches is re-planned
    whenever the search_path differs from the one it was made under, and a worker switches
    tenant with every task, so one statement shared by all tenants would be planned every time."""
    raw = connection.connection
    session = _sessions.get(raw)
    if session is None:
        session = _sessions[raw] = _SessionStatements()
    body, arguments = _as_prepared(sql)
    key = (sql, connection.schema_name)
    sent = "".join(session.pending)
    session.pending = []
    name = session.names.get(key)
    if name is None:
        session.made += 1
        name = f"saas_{session.made}"
        if len(session.names) >= PREPARED_PER_SESSION:
            _, evicted = session.names.popitem(last=False)
            sent += f"DEALLOCATE {evicted}; "
        session.names[key] = name
        sent += f"PREPARE {name} AS {body}; "
    else:
        session.names.move_to_end(key)
    execute = f"EXECUTE {name}({arguments})" if arguments else f"EXECUTE {name}"
    return sent + execute, session


def _session_prefix(*, synchronous_commit: bool) -> tuple[str, list[str] | None]:
    """SQL to send ahead of a statement, and the search path it sets (None: already set)."""
    from django_tenants.utils import quote_schema_name

    prefix, paths = "", None
    wrapper: Any = connection
    if not wrapper.search_path_set_schemas:
        paths = list(wrapper._get_cursor_search_paths())
        prefix = "SET search_path = " + ",".join(quote_schema_name(s) for s in paths) + "; "
    if not synchronous_commit:
        prefix += "SET LOCAL synchronous_commit = off; "
    return prefix, paths


def _fetch(cursor: Any) -> list[tuple[Any, ...]]:
    # Past the results of the statements in front (SET, PREPARE) to the statement's own.
    while cursor.description is None and cursor.nextset():
        pass
    return list(cursor.fetchall()) if cursor.description is not None else []


def rows_in_one_round_trip(
    sql: str,
    params: dict[str, Any],
    *,
    synchronous_commit: bool = True,
    prepared: bool = False,
) -> list[tuple[Any, ...]]:
    """Run one autocommit statement and return its rows, in a single round trip together with
    what the session needs first.

    - The active schema's `SET search_path`: django-tenants sends it as a statement of its own
      on the first cursor after a switch, and a worker switches for every task (the tenant
      arrives with the task and leaves after it), so that was a round trip per job before its
      claim. Sent in the same query string, it costs a few bytes.
    - `synchronous_commit=False`: this statement's commit does not wait for the WAL flush
      (PostgreSQL's asynchronous commit: a crash of the database server can lose the last
      fraction of a second of such commits, never corrupt anything). Only for statements whose
      loss in such a crash is harmless; the caller says why.
    - `prepared=True`: the statement is prepared once per session and tenant schema (PREPARE,
      then EXECUTE with the values): PostgreSQL then plans it at most a few times instead of on
      every call. For the hot path's CTE statements over a table with many partial indexes,
      planning cost more than executing (pg_stat_statements: 0.27 ms planning against 0.17 ms
      executing a claim; bench.variants). Values are bound by psycopg as for any statement; one
      whose place does not fix its type (a bare entry of a SELECT list) is text, so cast it.

    Several statements in one query string run as one implicit transaction (the simple query
    protocol of Django's client-side binding cursors), so `SET LOCAL` applies to the statement
    alone, and a failure undoes the `SET search_path` too: django-tenants is then told that it is
    not set. Inside an atomic block (a test's, or a caller's transaction) no setting is folded:
    it would last as long as that transaction.
    """
    prepared = prepared and settings.DB_PREPARED_STATEMENTS
    for again in (False, True):
        try:
            return _rows_once(sql, params, synchronous_commit=synchronous_commit, prepared=prepared)
        except DatabaseError as exc:
            # Nothing ran (the whole string is one transaction): prepare afresh, once.
            stale = getattr(getattr(exc, "__cause__", None), "sqlstate", None) in _STALE_PREPARED
            if again or not prepared or not stale or connection.in_atomic_block:
                raise
    raise AssertionError("unreachable")


def _rows_once(
    sql: str, params: dict[str, Any], *, synchronous_commit: bool, prepared: bool
) -> list[tuple[Any, ...]]:
    from django_tenants.utils import get_limit_set_calls

    wrapper: Any = connection
    fold = not connection.in_atomic_block and get_limit_set_calls()
    if not fold and not prepared:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return _fetch(cursor)
    prefix, paths = "", None
    if fold:
        # The cursor must not send django-tenants' own SET: this flag is its guard against
        # re-entry.
        wrapper._setting_search_path = True
    try:
        cursor = connection.cursor()
    finally:
        wrapper._setting_search_path = False
    if fold:
        prefix, paths = _session_prefix(synchronous_commit=synchronous_commit)
    session = None
    statement = sql
    if prepared:
        statement, session = _prepared_statement(sql)
    try:
        with cursor:
            cursor.execute(prefix + statement, params)
            rows = _fetch(cursor)
    except BaseException:
        if paths is not None:
            wrapper.search_path_set_schemas = None
        if session is not None:
            # A PREPARE in the failed string may or may not exist now (it outlives a rollback,
            # but not its own error): start again from none.
            session.forget_all()
        raise
    if paths is not None:
        wrapper.search_path_set_schemas = paths
    return rows


def schema_search_path_local(schema_name: str) -> str:
    """`SET LOCAL search_path` to what django-tenants sets for the schema `schema_name` (a
    tenant's: with public and the extra paths; public's: public and the extra paths), to put
    ahead of statements that run in that tenant inside a transaction of several tenants (the
    beat's occurrences). It lasts until the query string sets another or the transaction ends;
    django-tenants' record of the session's setting is untouched, so such a query string ends by
    setting the active schema's path again."""
    from django_tenants.utils import get_public_schema_name, quote_schema_name

    public = get_public_schema_name()
    extra = getattr(settings, "PG_EXTRA_SEARCH_PATHS", [])  # as django-tenants reads it
    paths = [schema_name, *extra] if schema_name == public else [schema_name, public, *extra]
    return "SET LOCAL search_path = " + ",".join(quote_schema_name(s) for s in paths) + "; "
