from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The reconciler's and the dispatcher's threads start with every worker (worker_ready);
        # imported here so that they are connected in every process that may become a worker.
        from jobs import dispatcher, maintenance  # noqa: F401
