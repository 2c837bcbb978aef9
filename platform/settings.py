"""Django settings, read from the environment (see CONTRACT.md, "Environment").

Every variable goes through the typed helpers in saas_platform.lib.env, which stop start-up with a
message naming the variable. Integrations are on only when their variable is set.
"""

from __future__ import annotations

from pathlib import Path

import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue
from saas_platform.lib.env import env_bool, env_choice, env_hostname, env_int, env_str, env_url
from saas_platform.lib.service_urls import database_from_url, redis_with_db
from saas_platform.observability.multiproc import multiproc_dir_ensure

# Before anything imports prometheus_client (it picks its storage at import).
multiproc_dir_ensure()

from saas_platform.observability.logs import LOG_FORMATS, logging_config  # noqa: E402

# Lets `admin.ModelAdmin[Model]` and friends be subscripted at run time, as the type hints say.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "development-only-secret-key-do-not-use-in-production"  # noqa: S105
# Rotating SECRET_KEY: put the old one here (comma-separated) until sessions and password-reset
# links signed with it have expired. API keys do not depend on it (tenants.apikeys).
SECRET_KEY_FALLBACKS = [key for key in env_str("SECRET_KEY_FALLBACKS").split(",") if key]

BASE_DOMAIN = env_hostname("BASE_DOMAIN", "localhost")
ALLOWED_HOSTS = [BASE_DOMAIN, f".{BASE_DOMAIN}"]
if DEBUG:
    ALLOWED_HOSTS += ["127.0.0.1", "testserver"]

# --- Tenancy (django-tenants): see DESIGN.md "Tenancy" ---------------------------------------
SHARED_APPS = [
    "django_tenants",
    "saas_platform",
    "tenants",
    "billing",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # No models: what makes OpClass an index wrapper (jobs' job_args_trgm_idx) and PostgreSQL's
    # lookups. It reads two type oids once per process, on its first connection.
    "django.contrib.postgres",
    # Only for its templates and static files: django-ninja serves /api/v1/docs with its bundled
    # Swagger UI when "ninja" is an installed app, and from a CDN otherwise (no models).
    "ninja",
    "django_celery_beat",
    # htmx as a static file (the portal's live updates); no models.
    "django_htmx",
    # The tenant portal's pages, templates and static files; no models of its own (tenant users
    # are auth's, in each tenant's schema).
    "portal",
]
# django_celery_results is only here: a result written without an active tenant has no table to
# land in and fails loudly instead of leaking into the public schema.
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django_celery_results",
    "django_celery_beat",
    "jobs",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# New tenants are cloned from this schema (kept migrated like any tenant) instead of replaying
# every migration; see tenants.services.tenant_create.
TENANT_BASE_SCHEMA = "tenant_template"
TENANT_CREATION_FAKES_MIGRATIONS = True
# Unknown hosts get a 404 instead of silently landing on the public schema.
SHOW_PUBLIC_IF_NO_TENANT_FOUND = False
TENANT_MULTIPROCESSING_MAX_PROCESSES = env_int("TENANT_MIGRATE_PROCESSES", 2, minimum=1)
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
# Issue `SET search_path` only after a switch, not before every statement (django-tenants'
# default). Switches that change nothing are skipped (tenant_context.tenant_enter), so most
# requests and tasks send no SET at all. Rollbacks re-arm it (django-tenants handles that).
TENANT_LIMIT_SET_CALLS = True

MIDDLEWARE = [
    "saas_platform.api.api_body_limit",
    "tenants.middleware.TenantHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, API docs) from STATIC_ROOT, in every process, DEBUG or not.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.htmx, so a view can answer a partial to htmx and a whole page to everyone else.
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "saas_platform.urls_tenant"
PUBLIC_SCHEMA_URLCONF = "saas_platform.urls_public"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "platform" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "saas_platform.wsgi.application"
# API bodies over 1 MiB get a 413 (a chunked body without Content-Length included).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql"))
if not DATABASE_URL:
    # `make run` / `make test` start an embedded server and export DATABASE_URL before Django
    # starts; reaching this line means a process was started some other way.
    raise ImproperlyConfigured(
        "DATABASE_URL must be set (make run and make test start an embedded PostgreSQL for you)"
    )
DATABASES = {"default": database_from_url(DATABASE_URL)}
DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
# Connections are kept open between requests and tasks; search_path is session state, so never
# put a transaction-mode pooler in front of this (DESIGN.md).
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 600, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The worker's hot statements (claim, success, the dispatcher's candidates) are prepared per
# session and tenant schema (saas_platform.lib.db): prepared statements are session state too.
DB_PREPARED_STATEMENTS = True
_test_db_name = env_str("TEST_DATABASE_NAME")
if _test_db_name:
    DATABASES["default"]["TEST"] = {"NAME": _test_db_name}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, cache, state -------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
if not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL must be set (make run and make test start an embedded Redis for you)"
    )
# Every Redis key this deployment writes starts with this prefix, so several deployments (or test
# runs) can share one server and clean up after themselves.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX")
# Logical databases on that server: the broker on the URL's own, the cache on 1, and the
# platform's state (usage counters, worker liveness, rate buckets) on 2, so that flushing the
# broker or the cache never loses a count.
REDIS_STATE_URL = redis_with_db(REDIS_URL, env_int("REDIS_STATE_DB", 2, minimum=0))
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_with_db(REDIS_URL, 1),
        "KEY_PREFIX": REDIS_KEY_PREFIX,
    }
}

# --- Celery (read by saas_platform.celery_app with namespace="CELERY") --------------------------
CELERY_BROKER_URL = REDIS_URL
# The transport behind redis:// and rediss:// broker URLs (saas_platform.celery_app registers it
# as kombu's alias of those schemes): kombu's Redis transport with one client per channel instead
# of one per command (saas_platform.lib.redis_transport). "" leaves kombu's own.
REDIS_BROKER_TRANSPORT = "saas_platform.lib.redis_transport:Transport"
# Results live in each tenant's schema (django-celery-results); the subclass activates the tenant
# of the request for writes made outside the task (worker lost, time limit, revoke).
CELERY_RESULT_BACKEND = "jobs.results_backend.JobResultsBackend"
CELERY_RESULT_EXTENDED = True
# A job's end is recorded even across a database outage of a couple of minutes: the write is
# retried with backoff (0.5 s doubling to 10 s, about 3 minutes in all) before Celery gives up;
# after that the reconciler requeues the attempt whose end was never recorded.
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 20
CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS = 500
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS = 10_000
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = False
CELERY_TASK_TIME_LIMIT = 30 * 60
# Longer than any time limit, so a running job is never handed to a second worker; delays longer
# than this wait in the Job table (run_at), not as broker ETAs.
CELERY_BROKER_VISIBILITY_TIMEOUT = 2 * 60 * 60
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
    "global_keyprefix": REDIS_KEY_PREFIX,
    "socket_connect_timeout": 2,
    # Per-priority lists in Redis, consumed highest priority first (job priority, jobs.publishing).
    "queue_order_strategy": "priority",
    "priority_steps": list(range(10)),
}
# Off: Celery's daily cleanup task would run in the public schema, which has no results table.
CELERY_RESULT_EXPIRES = None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# The queues a worker consumes when started without -Q; job types name theirs (the catalogue).
# A worker started with `-Q heavy` serves only the heavy job types, as in the seed.
CELERY_TASK_QUEUES = [Queue("default"), Queue("heavy")]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_EVENTS", default=False)
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# One beat for the platform's entries and every tenant's schedules (jobs.schedules.beat): a
# django-celery-beat DatabaseScheduler that also holds a lease, so a second beat stands by.
CELERY_BEAT_SCHEDULER = "jobs.schedules.beat:TenantBeatScheduler"
# Publishing must not hang a request when Redis is down: fail fast, the reconciler republishes.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# The reconciler (jobs.maintenance) runs in every worker's main process, one pass at a time
# across the cluster, this often.
JOBS_RECONCILE_SECONDS = env_int("JOBS_RECONCILE_SECONDS", 10, minimum=1)
# Workers report themselves this often (TTL three times that); one whose report has been missing
# on two looks a TTL apart is dead: 10 s beats, 30 s TTL and 10 s passes put a dead worker's
# jobs back within about 80 s, inside the contract's 2 minutes.
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 10, minimum=1)
# Each job type's default rate, in the seed's form ('*' for every type, Celery's notation, and an
# optional `burst`). The tenant's plan scales or overrides it and operators override it per tenant
# (billing.limits); jobs' dispatcher enforces it per tenant across the cluster. Celery's own
# rate limits, which work per worker and hold rate-limited messages in a worker's memory where
# they block everyone's jobs (celery#8119), are off.
CELERY_TASK_ANNOTATIONS = {
    "*": {"rate_limit": "10/s"},
    "email.send": {"rate_limit": "1/s"},
}
CELERY_WORKER_DISABLE_RATE_LIMITS = True
# Platform schedules (beat, from settings as in the seed), run in the public schema by the same
# beat as the tenants' schedules, which live in their schemas (jobs.schedules).
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "platform.beat-heartbeat": {
        "task": "platform.beat_heartbeat",
        "schedule": env_int("BEAT_HEARTBEAT_SECONDS", 60, minimum=1),
        "options": {"queue": "default"},
    },
    # Usage counters from Redis into billing's tables (billing.rollup); idempotent, O(active).
    "billing.usage_rollup": {"task": "billing.usage_rollup", "schedule": 60.0},
    # Drafts refreshed, closed months made final (billing.invoices).
    "billing.invoices_close": {"task": "billing.invoices_close", "schedule": 3600.0},
    # Finished jobs past their plan's retention deleted per tenant, in batches (jobs.retention).
    "jobs.retention_sweep": {"task": "jobs.retention_sweep", "schedule": 3600.0},
}

# --- Billing --------------------------------------------------------------------------------------
# Off only for a benchmark's baseline: usage counters are what quotas and invoices are made of.
BILLING_METERING = env_bool("BILLING_METERING", default=True)
# Late counts (a job that finished at 23:59:59.9, a roll-up that was down) land in a month's
# invoice until this many days after it ends; then the invoice is final.
BILLING_INVOICE_GRACE_DAYS = env_int("BILLING_INVOICE_GRACE_DAYS", 3, minimum=0)
BILLING_CURRENCY = env_str("BILLING_CURRENCY", "USD")
# Share of the monthly job quota at which the usage document, admin and portal raise an alarm.
BILLING_QUOTA_ALARM_PERCENT = env_int("BILLING_QUOTA_ALARM_PERCENT", 80, minimum=1)

# --- Auth, i18n, static -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# The portal's sign-in page (the operator admin on the public host has its own).
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
# Host-only cookies (no Domain attribute), said out loud because the portal depends on it: a
# session or CSRF cookie set on acme.localhost is never sent to globex.localhost. Setting either
# to ".<BASE_DOMAIN>" would hand one tenant's session to every tenant's host.
SESSION_COOKIE_DOMAIN = None
CSRF_COOKIE_DOMAIN = None
SESSION_COOKIE_SAMESITE = "Lax"
# Invitation and password-reset links stay valid this long (one use: setting a password
# invalidates them).
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3 * 24 * 3600, minimum=60)
# Failed sign-ins allowed per account and per address (per tenant) within the window.
PORTAL_LOGIN_FAILURES_PER_ACCOUNT = env_int("PORTAL_LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
PORTAL_LOGIN_FAILURES_PER_ADDRESS = env_int("PORTAL_LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1)
PORTAL_LOGIN_WINDOW_SECONDS = env_int("PORTAL_LOGIN_WINDOW_SECONDS", 15 * 60, minimum=1)
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# Filled by `manage.py collectstatic` (the image build, `make run`, the tests that serve pages).
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / ".data" / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names, so WhiteNoise lets browsers cache them for good; compressed copies beside.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", f"jobs@{BASE_DOMAIN}")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / ".data" / "emails"))

# http.request refuses private, loopback and link-local destinations unless the operator allows
# them, all of them or some networks (comma-separated CIDRs).
OUTBOUND_HTTP_ALLOW_PRIVATE = env_bool("OUTBOUND_HTTP_ALLOW_PRIVATE", default=False)
OUTBOUND_HTTP_ALLOWED_NETWORKS = [
    network.strip()
    for network in env_str("OUTBOUND_HTTP_ALLOWED_NETWORKS").split(",")
    if network.strip()
]

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Observability: logs, Sentry, metrics (saas_platform.observability) ------------------------
LOG_FORMAT = env_choice("LOG_FORMAT", LOG_FORMATS, "plain")
LOGGING = logging_config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))
# First, so that even a request the tenant lookup turns away has its request id.
MIDDLEWARE.insert(0, "saas_platform.observability.middleware.RequestContextMiddleware")
SENTRY_DSN = env_url("SENTRY_DSN", schemes=("http", "https"))
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT")
SENTRY_RELEASE = env_str("SENTRY_RELEASE")
if SENTRY_DSN:
    from saas_platform.observability.sentry import sentry_init

    sentry_init(
        dsn=SENTRY_DSN, environment=SENTRY_ENVIRONMENT or None, release=SENTRY_RELEASE or None
    )
# GET /metrics on the public host needs `Authorization: Bearer <METRICS_TOKEN>` (unset: no such
# page); METRICS_PORT makes a worker's main process serve its own, for hosts without a web.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_PORT = env_int("METRICS_PORT", 0, minimum=0)

# --- HTTPS behind the deployment's proxy (deploy/ sets these; `manage.py check --deploy`) -------
# The proxy terminates TLS and says so in X-Forwarded-Proto; trust that only behind one.
if env_bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=False)
# Probes and scrapers talk plain HTTP to the pod, not through the proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True  # tenants live on subdomains
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
