"""Libraries every app may use (the bottom layer of DESIGN.md's "Layers").

Nothing here imports the apps (tenants, billing, jobs) or the wiring (settings, URL confs, the
Celery app); models are reached only through settings, e.g. django-tenants' get_tenant_model().
"""
