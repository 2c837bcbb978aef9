"""The trigram index behind the portal's "arguments contain" search.

pg_trgm is a database-wide extension whose objects live in one schema. django-tenants runs this
migration once per tenant schema with search_path = "<tenant>, public" (plus
PG_EXTRA_SEARCH_PATHS), so the extension is created in public, never in whichever tenant
migrates first: there the other tenants could not see gin_trgm_ops, and dropping that tenant's
schema would take the operator class, and every other tenant's index, with it. A database where
an operator installed pg_trgm elsewhere keeps it there (IF NOT EXISTS); that schema must then be
in PG_EXTRA_SEARCH_PATHS. Tenants migrate in parallel processes: the advisory lock keeps two of
them from racing on the CREATE (the loser would fail on pg_extension's unique name).

Where the server has no pg_trgm (the embedded PostgreSQL of `make run` and `make test`), the
index is left out and the search walks the table; the migration says so in a warning.

The index is built in the migration's transaction, which blocks writes to a tenant's jobs while
it builds: 46 s for a million rows on the 2-core development machine, where a rare term then
takes 1-16 ms instead of a walk over the whole table.
"""

import logging

import django.contrib.postgres.indexes
import django.db.models.functions.comparison
import django.db.models.functions.text
from django.db import migrations, models

logger = logging.getLogger(__name__)

_INDEX = "job_args_trgm_idx"


def _trigram_index_create(apps, schema_editor):  # type: ignore[no-untyped-def]
    # Not every server ships the contrib extensions: the embedded PostgreSQL of `make run` and
    # `make test` (pgserver) has no pg_trgm. There the search still works, as a walk over the
    # tenant's jobs; the index is what makes it fast on a real server.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
        if cursor.fetchone() is None:
            logger.warning("pg_trgm is not available: the jobs' arguments search has no index")
            return
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext('jobs: CREATE EXTENSION pg_trgm'));"
            " CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public"
        )
        cursor.execute(
            f"CREATE INDEX {_INDEX} ON jobs_job USING gin ((UPPER((args)::text)) gin_trgm_ops)"
        )


def _trigram_index_drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    # The extension stays: other schemas' indexes may still use it.
    schema_editor.execute(f"DROP INDEX IF EXISTS {_INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0009_schedule_monitor_slug"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunPython(_trigram_index_create, _trigram_index_drop),
            ],
            state_operations=[
                migrations.AddIndex(
                    model_name="job",
                    index=django.contrib.postgres.indexes.GinIndex(
                        django.contrib.postgres.indexes.OpClass(
                            django.db.models.functions.text.Upper(
                                django.db.models.functions.comparison.Cast(
                                    "args", models.TextField()
                                )
                            ),
                            name="gin_trgm_ops",
                        ),
                        name=_INDEX,
                    ),
                ),
            ],
        ),
    ]
