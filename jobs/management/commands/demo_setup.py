from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services import tenant_create_on_plan
from tenants.models import ApiKey, Tenant
from tenants.provisioning import template_ensure
from tenants.services import apikey_create

DEMO_SLUG = "acme"
DEMO_ADMIN_EMAIL = "admin@acme.example"
DEMO_ADMIN_PASSWORD = "acme-admin-password"  # noqa: S105 -- development demo, printed on purpose
OPERATOR_USERNAME = "operator"
OPERATOR_PASSWORD = "operator-password"  # noqa: S105 -- development demo, printed on purpose
DEMO_KEY_NAME = "demo key (make run)"


class Command(BaseCommand):
    help = (
        "Development only: create (once) the demo tenant acme with an admin user, an operator "
        "account, and a fresh demo API key; print how to sign in."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", default="8000")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_setup creates known passwords; it runs only with DEBUG on.")
        template_ensure()
        tenant = Tenant.objects.filter(schema_name=DEMO_SLUG).first()
        if tenant is None:
            tenant = tenant_create_on_plan(
                slug=DEMO_SLUG,
                name="Acme Corporation",
                admin_email=DEMO_ADMIN_EMAIL,
                admin_password=DEMO_ADMIN_PASSWORD,
            ).tenant
        user_model = get_user_model()
        if not user_model.objects.filter(username=OPERATOR_USERNAME).exists():
            user_model.objects.create_superuser(
                username=OPERATOR_USERNAME, email="", password=OPERATOR_PASSWORD
            )
        # Only a hash of a key is stored, so each run makes a new demo key and retires the last.
        ApiKey.objects.filter(tenant=tenant, name=DEMO_KEY_NAME).delete()
        key = apikey_create(tenant=tenant, name=DEMO_KEY_NAME).plaintext
        port = options["port"]
        base = settings.BASE_DOMAIN
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"Portal:    http://{DEMO_SLUG}.{base}:{port}/",
                    f"           sign in as {DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD}",
                    f"Operators: http://{base}:{port}/admin/",
                    f"           sign in as {OPERATOR_USERNAME} / {OPERATOR_PASSWORD}",
                    f"API key:   {key}",
                    f"Try:       curl -H 'Authorization: Bearer {key}' "
                    f"http://{DEMO_SLUG}.{base}:{port}/api/v1/job-types",
                    "",
                ]
            )
        )
