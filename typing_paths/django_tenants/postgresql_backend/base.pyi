class FakeTenant:
    """What django-tenants puts on the connection for a schema without a Tenant row (public)."""

    schema_name: str
    tenant_type: str | None
    def __init__(self, schema_name: str, tenant_type: str | None = ...) -> None: ...
    def get_tenant_type(self) -> str | None: ...
