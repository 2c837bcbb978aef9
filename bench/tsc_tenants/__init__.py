"""The public-schema app of the tenant-schemas-celery baseline: its tenant and domain models.

The smallest django-tenants project a tenant-schemas-celery user would have. The product's own
`tenants` app is not reused: it brings billing, API keys and the template-schema provisioning,
none of which a tenant-schemas-celery setup has, and the baseline must measure only that glue.
"""
