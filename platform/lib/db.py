"""The default database connection, typed with the methods django-tenants adds to it.

Same object as `django.db.connection` (a per-thread proxy); only the static type differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.db import connection as _connection

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    class TenantConnection(BaseDatabaseWrapper):
        tenant: Any
        schema_name: str

        def set_tenant(self, tenant: Any, include_public: bool = True) -> None: ...
        def set_schema(self, schema_name: str, include_public: bool = True) -> None: ...
        def set_schema_to_public(self) -> None: ...


connection = cast("TenantConnection", _connection)
