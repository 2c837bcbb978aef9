"""The trigram index behind the portal's "arguments contain" search.

pg_trgm is a database-wide extension whose objects live in one schema. django-tenants runs this
migration once per tenant schema with search_path = "<tenant>, public" (plus
PG_EXTRA_SEARCH_PATHS), so the extension is created in public, never in whichever tenant
migrates first: there the other tenants could not see gin_trgm_ops, and dropping that tenant's
schema would take the operator class, and every other tenant's index, with it. A database where
an operator installed pg_trgm elsewhere keeps it there (IF NOT EXISTS); that schema must then be
in PG_EXTRA_SEARCH_PATHS. Tenants migrate in parallel processes: the advisory lock keeps two of
them from racing on the CREATE (the loser would fail on pg_extension's unique name).

The index is built in the migration's transaction, which blocks writes to a tenant's jobs while
it builds: 46 s for a million rows on the 2-core development machine, where a rare term then
takes 1-16 ms instead of a walk over the whole table.
"""

import django.contrib.postgres.indexes
import django.db.models.functions.comparison
import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0009_schedule_monitor_slug"),
    ]

    operations = [
        migrations.RunSQL(
            "SELECT pg_advisory_xact_lock(hashtext('jobs: CREATE EXTENSION pg_trgm'));"
            " CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;",
            # Other schemas' indexes may still use it: never dropped by a tenant's rollback.
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name="job",
            index=django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.text.Upper(
                        django.db.models.functions.comparison.Cast("args", models.TextField())
                    ),
                    name="gin_trgm_ops",
                ),
                name="job_args_trgm_idx",
            ),
        ),
    ]
