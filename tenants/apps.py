from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


def _forget_hosts(**_: Any) -> None:
    # This process sees its own domain and tenant changes at once; others within
    # HOST_CACHE_SECONDS (tenants.middleware).
    from tenants.middleware import host_cache_clear

    host_cache_clear()


class TenantsConfig(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        for model_name in ("Domain", "Tenant"):
            model = self.get_model(model_name)
            post_save.connect(
                _forget_hosts, sender=model, dispatch_uid=f"forget-hosts-{model_name}"
            )
            post_delete.connect(
                _forget_hosts, sender=model, dispatch_uid=f"forget-hosts-del-{model_name}"
            )
