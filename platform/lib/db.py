"""The default database connection, typed with the methods django-tenants adds to it.

Same object as `django.db.connection` (a per-thread proxy); only the static type differs. Also
the one way hot paths send a statement together with the session state it needs (one round trip).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

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


def rows_in_one_round_trip(
    sql: str, params: dict[str, Any], *, synchronous_commit: bool = True
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

    Several statements in one query string run as one implicit transaction (the simple query
    protocol of Django's client-side binding cursors), so `SET LOCAL` applies to the statement
    alone, and a failure undoes the `SET search_path` too: django-tenants is then told that it is
    not set. Inside an atomic block (a test's, or a caller's transaction) nothing is folded: the
    settings would last as long as that transaction.
    """
    from django_tenants.utils import get_limit_set_calls

    wrapper: Any = connection
    if connection.in_atomic_block or not get_limit_set_calls():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description is not None else []
    prefix, paths = _session_prefix(synchronous_commit=synchronous_commit)
    # The cursor must not send django-tenants' own SET: this flag is its guard against re-entry.
    wrapper._setting_search_path = paths is not None
    try:
        cursor = connection.cursor()
    finally:
        wrapper._setting_search_path = False
    try:
        with cursor:
            cursor.execute(prefix + sql, params)
            # Past the SETs' results to the statement's own.
            while cursor.description is None and cursor.nextset():
                pass
            rows = list(cursor.fetchall()) if cursor.description is not None else []
    except BaseException:
        if paths is not None:
            wrapper.search_path_set_schemas = None
        raise
    if paths is not None:
        wrapper.search_path_set_schemas = paths
    return rows
