"""The jobs list's "arguments contain" search is served by job_args_trgm_idx in every tenant
schema, with pg_trgm in public where every tenant's search_path finds it."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.db import connection, transaction

from jobs.selectors import JobFilters, job_filtered, job_list
from tests.jobs_helpers import queued_job
from tests.portal_helpers import ACME, portal_client

pytestmark = pytest.mark.usefixtures("tenant_db")


def _trigram_available() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
        return cursor.fetchone() is not None


@pytest.fixture
def trigram(tenant_db, actors):
    """The index exists only where the server ships pg_trgm (not the embedded PostgreSQL)."""
    if not _trigram_available():
        pytest.skip("this PostgreSQL has no pg_trgm: the search walks the table (migration 0010)")
    return actors


def test_the_search_finds_the_job_with_or_without_the_index(actors):
    queued_job(actors.acme, "demo.add", {"x": 5_550_123, "y": 1})
    with actors.acme:
        page = job_list(filters=JobFilters(args_contain="5550123"), limit=50)
    assert [job.args["x"] for job in page.items] == [5_550_123]


@pytest.mark.usefixtures("trigram")
def test_pg_trgm_lives_in_public_and_every_tenant_schema_has_the_index():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
        )
        assert cursor.fetchone() == ("public",)
        cursor.execute(
            "SELECT schemaname, indexdef FROM pg_indexes WHERE indexname = 'job_args_trgm_idx'"
        )
        found = dict(cursor.fetchall())
    for schema in ("acme", "globex", settings.TENANT_BASE_SCHEMA):
        assert "gin_trgm_ops" in found[schema], found
        assert "upper((args)::text)" in found[schema]


def test_the_selectors_search_is_the_expression_the_index_covers(trigram):
    actors = trigram
    queued_job(actors.acme, "demo.add", {"x": 8_675_309, "y": 1})
    with actors.acme:
        page = job_list(filters=JobFilters(args_contain="8675309"), limit=50)
    assert page.items  # found; and the plan is the index's, not a walk over every job
    with actors.acme, transaction.atomic(), connection.cursor() as cursor:
        # A test schema is too small for the planner to prefer an index: forbid the others.
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
        sql, params = job_filtered(JobFilters(args_contain="8675309")).query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Bitmap Index Scan on job_args_trgm_idx" in plan, plan


def test_a_search_shorter_than_a_trigram_is_refused_beside_the_field():
    response = portal_client(ACME, "alice@acme.example").get("/jobs/?q=ab")
    assert response.status_code == 400
    assert re.search(r'id="id_q_error">[^<]*at least 3 characters', response.content.decode())
