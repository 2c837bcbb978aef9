from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The reconciler's thread starts with every worker (worker_ready); imported here so that
        # it is connected in every process that may become a worker.
        from jobs import maintenance  # noqa: F401
