"""Set up a tenant-schemas-celery baseline database: `python -m bench.tsc_setup <schema>`.

Run by bench.throughput in a process of its own, with DJANGO_SETTINGS_MODULE and DATABASE_URL
naming the baseline's settings and (empty) database: the benchmark process's Django is the
product's. Migrates the public schema, then creates one tenant the way a django-tenants user
does (Client.save() creates its schema and runs the tenant apps' migrations in it), with a
domain as django-tenants expects of every tenant.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.tsc_settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("schema", help="the tenant's schema name")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from bench.tsc_tenants.models import Client, Domain

    # django-tenants' migrate: the shared apps into public (there is no tenant yet).
    call_command("migrate", interactive=False, verbosity=0)
    tenant = Client(schema_name=args.schema, name="Bench load")
    tenant.save(verbosity=0)
    Domain(domain=f"{args.schema}.localhost", tenant=tenant, is_primary=True).save()


if __name__ == "__main__":
    main()
