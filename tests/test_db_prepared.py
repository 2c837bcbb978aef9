"""Hot-path statements prepared per session and tenant schema (saas_platform.lib.db).

PostgreSQL re-plans a prepared statement whenever the search_path differs from the one it was
prepared under, so each tenant schema gets a statement of its own; these tests check that each
tenant's statement reads its own tables, that the session keeps a bounded number of them, and that
a statement gone behind our back, or a failed one, costs nothing but a new PREPARE.
"""

from __future__ import annotations

import pytest
from django.db import DataError, connection
from django.test.utils import CaptureQueriesContext
from saas_platform.lib import db
from saas_platform.lib.db import rows_in_one_round_trip
from saas_platform.lib.tenant_context import tenant_activate

from jobs.models import Job

_COUNT = "SELECT current_schema(), count(*) FROM jobs_job WHERE type = %(type)s"


def _sent(block) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        block()
    return [q["sql"] for q in captured.captured_queries]


def _ours() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'saas\\_%%'")
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def fresh_session(tenant_db):
    """A session of its own: what earlier tests prepared is not ours to count."""
    connection.close()
    yield tenant_db
    tenant_activate(None)


def _in(tenant, block):
    tenant_activate(None)
    tenant_activate(tenant.pk)
    try:
        return block()
    finally:
        tenant_activate(None)


def test_a_statement_is_prepared_once_per_tenant_and_reads_that_tenants_rows(fresh_session):
    actors = fresh_session
    with actors.acme:
        Job(type="demo.prepared", args={}, queue="default", submitted_by="test").save()

    def count() -> list[tuple[object, ...]]:
        return rows_in_one_round_trip(_COUNT, {"type": "demo.prepared"}, prepared=True)

    first = _in(actors.acme, lambda: _sent(count))
    assert "PREPARE saas_" in first[0], first
    assert "EXECUTE saas_" in first[0], first
    again = _sent(lambda: _in(actors.acme, count))
    assert "PREPARE" not in again[-1], again
    assert "EXECUTE saas_" in again[-1], again
    assert _in(actors.acme, count) == [("acme", 1)]
    # globex's own statement: its rows, not acme's plan of acme's table.
    globex = _sent(lambda: _in(actors.globex, count))
    assert "PREPARE saas_" in globex[-1], globex
    assert _in(actors.globex, count) == [("globex", 0)]
    assert len(_ours()) == 2


def test_the_session_keeps_a_bounded_number_and_deallocates_the_oldest(fresh_session, monkeypatch):
    actors = fresh_session
    monkeypatch.setattr(db, "PREPARED_PER_SESSION", 2)
    for tenant in (actors.acme, actors.globex, actors.initech):
        _in(tenant, lambda: rows_in_one_round_trip(_COUNT, {"type": "x"}, prepared=True))
    assert len(_ours()) == 2
    # acme's was the oldest: it is prepared again, and still reads acme's table.
    sent = _sent(
        lambda: _in(
            actors.acme, lambda: rows_in_one_round_trip(_COUNT, {"type": "x"}, prepared=True)
        )
    )
    assert "DEALLOCATE saas_" in sent[-1], sent
    assert "PREPARE saas_" in sent[-1], sent
    assert _in(
        actors.acme, lambda: rows_in_one_round_trip(_COUNT, {"type": "x"}, prepared=True)
    ) == [("acme", 0)]
    assert len(_ours()) == 2


def test_a_statement_deallocated_behind_our_back_is_prepared_again(fresh_session):
    actors = fresh_session

    def count() -> list[tuple[object, ...]]:
        return rows_in_one_round_trip(_COUNT, {"type": "x"}, prepared=True)

    assert _in(actors.acme, count) == [("acme", 0)]
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    assert _in(actors.acme, count) == [("acme", 0)]
    assert len(_ours()) == 1


def test_after_a_failed_statement_the_session_starts_again_from_none(fresh_session):
    actors = fresh_session
    _in(actors.acme, lambda: rows_in_one_round_trip(_COUNT, {"type": "x"}, prepared=True))
    with pytest.raises(DataError):
        _in(
            actors.acme,
            lambda: rows_in_one_round_trip("SELECT 1 / %(zero)s", {"zero": 0}, prepared=True),
        )
    sent = _sent(
        lambda: _in(
            actors.acme, lambda: rows_in_one_round_trip(_COUNT, {"type": "x"}, prepared=True)
        )
    )
    assert sent[-1].count("DEALLOCATE ALL; ") == 1, sent
    assert "PREPARE saas_" in sent[-1], sent
    assert len(_ours()) == 1


def test_values_are_bound_as_for_any_statement(fresh_session):
    """Quotes, NULL, booleans, jsonb and uuid arrays reach the prepared statement intact. A value
    whose place does not fix its type (a bare entry of a SELECT list) is text, as in any
    prepared statement: the SQL casts it."""
    actors = fresh_session
    job = None
    with actors.acme:
        job = Job(type="demo.prepared", args={}, queue="default", submitted_by="test")
        job.save()
    rows = _in(
        actors.acme,
        lambda: rows_in_one_round_trip(
            "SELECT %(text)s::text, %(none)s::text IS NULL, %(flag)s::boolean, %(doc)s::jsonb ->> 'k',"
            " (SELECT count(*) FROM jobs_job WHERE id = ANY(%(ids)s))",
            {
                "text": "it's; DROP TABLE",
                "none": None,
                "flag": True,
                "doc": '{"k": "v"}',
                "ids": [job.id],
            },
            prepared=True,
        ),
    )
    assert rows == [("it's; DROP TABLE", True, True, "v", 1)]
