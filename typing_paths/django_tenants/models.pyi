# Types for the parts of django-tenants this project uses (the package ships none).
from typing import Any, Self

from django.db import models

class TenantMixin(models.Model):
    auto_create_schema: bool
    auto_drop_schema: bool
    clone_mode: str
    schema_name: models.CharField[str, str]
    domain_url: str | None
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
    def activate(self) -> None: ...
    @classmethod
    def deactivate(cls) -> None: ...

class DomainMixin(models.Model):
    domain: models.CharField[str, str]
    tenant: models.ForeignKey[Any, Any]
    is_primary: models.BooleanField[bool, bool]
