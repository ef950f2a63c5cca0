"""Django settings, read from the environment (and a `.env` file when present)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from dotenv import load_dotenv

from dashboard.env import CONFIG_ERRORS, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
# Real environment variables win over the file, so tests and CI can override it.
load_dotenv(os.environ.get("DOTENV_PATH", BASE_DIR / ".env"), override=False)

# Off unless the environment turns it on: a deployment that forgets the variable is a
# production one (`make run` sets DJANGO_DEBUG=1 for the local profile and says so).
DEBUG = env_bool("DJANGO_DEBUG", False)
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-in-production-0123456789"  # noqa: S105 (used only while DEBUG is on; check E002)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "dashboard.apps.DashboardAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",  # Swagger UI from the installed package's static files, not a CDN
    "axes",
    "django_q",
    "uploads",
    "dashboard",
]

MIDDLEWARE = [
    # Outermost, so that every response gets the headers, refusals made further in included.
    "dashboard.middleware.SecurityHeadersMiddleware",
    # Before Django's own, so that refusals raised by everything below (bad Host, body too
    # large) still answer the API's JSON shape under /api/.
    "uploads.middleware.ApiErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before the password is checked
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "dashboard" / "templates"],
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


def _database_config(url: str) -> dict[str, Any]:
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True))
    except Exception as exc:  # dj-database-url raises several types for one mistake
        CONFIG_ERRORS.append(f"DATABASE_URL could not be read: {exc}")
        config = dict(dj_database_url.parse(f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Web, qcluster workers and consumers share one file: WAL lets readers run beside a
        # writer, IMMEDIATE takes the write lock up front so concurrent writers wait for
        # each other (busy timeout) instead of failing with "database is locked".
        # Kept open like PostgreSQL's (conn_max_age above): opening a connection costs a file
        # open and the PRAGMAs on every request, closing the last one a WAL checkpoint
        # (measured in bench/bench_issue.py, docs/benchmarks.md).
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        test_name = os.environ.get("DJANGO_TEST_SQLITE_NAME")
        if test_name:
            config["TEST"] = {"NAME": test_name}
    return config


DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": _database_config(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "admin:login"

# --- CKAN ---------------------------------------------------------------------------------
CKAN_URL = env_str("CKAN_URL").rstrip("/")
CKAN_API_TOKEN = env_str("CKAN_API_TOKEN")
CKAN_TIMEOUT_SECONDS = env_int("CKAN_TIMEOUT_SECONDS", 10, minimum=1, maximum=300)

# --- Object storage: which store (uploads/stores/) ----------------------------------------
# "s3": Cloudflare R2, AWS S3 or moto (STORAGE_* below); "azure": Azure Blob Storage or Azurite (AZURE_STORAGE_*).
STORAGE_BACKEND = env_str("STORAGE_BACKEND", "s3").lower()

# --- Object storage (R2 or S3) ------------------------------------------------------------
STORAGE_ENDPOINT_URL = env_str("STORAGE_ENDPOINT_URL").rstrip("/")
STORAGE_REGION = env_str("STORAGE_REGION", "auto")
STORAGE_BUCKET = env_str("STORAGE_BUCKET")
STORAGE_ACCESS_KEY_ID = env_str("STORAGE_ACCESS_KEY_ID")
STORAGE_SECRET_ACCESS_KEY = env_str("STORAGE_SECRET_ACCESS_KEY")
STORAGE_KEY_PREFIX = env_str("STORAGE_KEY_PREFIX", "resources/api_uploads/")
STORAGE_PUBLIC_BASE_URL = env_str("STORAGE_PUBLIC_BASE_URL").rstrip("/")
# R2 and S3 both refuse presigned URLs valid for more than 7 days.
MAX_UPLOAD_URL_TTL = 604800
UPLOAD_URL_TTL = env_int("UPLOAD_URL_TTL", 3600, minimum=1, maximum=MAX_UPLOAD_URL_TTL)
# S3 object ACLs: public datasets' files are PUT with `x-amz-acl: public-read`, and the reconcile
# fix can make one object private. R2 has no object ACLs: leave this off there.
STORAGE_OBJECT_ACLS = env_bool("STORAGE_OBJECT_ACLS", False)

# --- Object storage (Azure Blob Storage, STORAGE_BACKEND=azure) ---------------------------
AZURE_STORAGE_ACCOUNT = env_str("AZURE_STORAGE_ACCOUNT")
AZURE_STORAGE_CONTAINER = env_str("AZURE_STORAGE_CONTAINER")
# The account key (signs the SAS URLs), or a connection string holding account, key and endpoints.
AZURE_STORAGE_KEY = env_str("AZURE_STORAGE_KEY")
AZURE_STORAGE_CONNECTION_STRING = env_str("AZURE_STORAGE_CONNECTION_STRING")
# The Blob endpoint when it is not https://<account>.blob.core.windows.net (Azurite: http://127.0.0.1:10000/<account>).
AZURE_STORAGE_ENDPOINT = env_str("AZURE_STORAGE_ENDPOINT").rstrip("/")

# --- Privacy (docs/privacy.md) ------------------------------------------------------------
# "refuse": no public URL for a private dataset's file (409). "public": the operator's explicit
# opt-in that private datasets' files are readable by anyone who has their bucket URL.
PRIVATE_DATASET_UPLOADS = env_str("PRIVATE_DATASET_UPLOADS", "refuse").lower()

# --- Link style (docs/link-styles.md) -------------------------------------------------------
# "public": the service's own keys, linked with the public bucket URL. "s3filestore": the keys
# and links of ckanext-s3filestore, so CKAN's download route serves the file after its
# permission check (private datasets' files are then allowed: they are stored private).
# "ckan_files": registered in a CKAN 2.12 file storage and served by CKAN's /file/download/<id>.
LINK_STYLE = env_str("LINK_STYLE", "public").lower()
# ckanext.s3filestore.aws_storage_path of the CKAN site ("" when it sets none).
S3FILESTORE_STORAGE_PATH = env_str("S3FILESTORE_STORAGE_PATH", "").strip("/")
# "ckan_files": the CKAN 2.12 file storage (ckan.files.storage.<name>) on STORAGE_BUCKET that
# registers the files, and its `path` option (the key prefix of its objects).
CKAN_FILES_STORAGE = env_str("CKAN_FILES_STORAGE", "")
CKAN_FILES_STORAGE_PATH = env_str("CKAN_FILES_STORAGE_PATH", "").strip("/")

# --- Large files (multipart) --------------------------------------------------------------
_MIB = 1024**2
# Above this declared size (or when the client asks) an upload is multipart.
MULTIPART_THRESHOLD = env_int("MULTIPART_THRESHOLD", 100 * _MIB, minimum=5 * _MIB, maximum=5 * 1024**3)
# The part size the service prefers; it grows when the file would need more than 10,000 parts.
MULTIPART_PART_SIZE = env_int("MULTIPART_PART_SIZE", 64 * _MIB, minimum=5 * _MIB, maximum=5 * 1024**3)
# R2's object limit (S3 allows 48.8 TiB in 10,000 parts of 5 GiB; R2 stops at 5 TiB).
UPLOAD_MAX_SIZE = env_int("UPLOAD_MAX_SIZE", 5 * 1024**4, minimum=1, maximum=10_000 * 5 * 1024**3)
# How long an unfinished multipart upload may stay open (R2's own lifecycle default: 7 days).
MULTIPART_MAX_AGE = env_int("MULTIPART_MAX_AGE", 7 * 86400, minimum=3600, maximum=30 * 86400)
# How long `complete` waits for the store to assemble a multipart object.
STORAGE_COMPLETE_TIMEOUT_SECONDS = env_int("STORAGE_COMPLETE_TIMEOUT_SECONDS", 600, minimum=30, maximum=3600)
# Part URLs handed out in one answer (the rest come from POST /uploads/<id>/parts).
MULTIPART_URLS_PER_PAGE = env_int("MULTIPART_URLS_PER_PAGE", 100, minimum=1, maximum=1000)
# Active types (HTML, SVG, XML, JavaScript, executables: uploads.content_policy) are refused
# unless listed here; listed ones are stored with `Content-Disposition: attachment`.
UPLOAD_ALLOWED_ACTIVE_TYPES = [item.lower() for item in env_list("UPLOAD_ALLOWED_ACTIVE_TYPES", [])]

# Organization and group images (POST /api/v1/organizations|groups/<id>/image): image types
# only; SVG is not among them by default (served from the public bucket, it runs scripts).
IMAGE_ALLOWED_TYPES = [
    item.lower() for item in env_list("IMAGE_ALLOWED_TYPES", ["image/png", "image/jpeg", "image/gif", "image/webp"])
]
IMAGE_MAX_SIZE = env_int("IMAGE_MAX_SIZE", 5 * _MIB, minimum=1, maximum=5 * 1024**3)

# --- Linking ------------------------------------------------------------------------------
LINK_MAX_ATTEMPTS = env_int("LINK_MAX_ATTEMPTS", 8, minimum=1, maximum=100)
LINK_RETRY_BASE_SECONDS = env_int("LINK_RETRY_BASE_SECONDS", 30, minimum=1)
LINK_RETRY_MAX_SECONDS = env_int("LINK_RETRY_MAX_SECONDS", 3600, minimum=1)
# A link's claim on its upload and lease on its resource expire this long after their last
# renewal (a SIGKILLed worker's link is taken over then); must exceed CKAN_TIMEOUT_SECONDS.
LINK_CLAIM_TIMEOUT_SECONDS = env_int("LINK_CLAIM_TIMEOUT_SECONDS", 30, minimum=10)
UPLOAD_EXPIRY_GRACE_SECONDS = env_int("UPLOAD_EXPIRY_GRACE_SECONDS", 900, minimum=0)
SWEEP_INTERVAL_MINUTES = env_int("SWEEP_INTERVAL_MINUTES", 1, minimum=1)
# The sweep HEADs uploads still `issued` this long after issuance (a lost event heals in minutes),
# at most SWEEP_HEAD_ISSUED_LIMIT of them per run (oldest first).
SWEEP_HEAD_ISSUED_AFTER_SECONDS = env_int("SWEEP_HEAD_ISSUED_AFTER_SECONDS", 120, minimum=10)
SWEEP_HEAD_ISSUED_LIMIT = env_int("SWEEP_HEAD_ISSUED_LIMIT", 200, minimum=0, maximum=10_000)

# --- Storage events -----------------------------------------------------------------------
EVENTS_WEBHOOK_SECRET = env_str("EVENTS_WEBHOOK_SECRET")
EVENTS_WEBHOOK_MAX_BYTES = env_int("EVENTS_WEBHOOK_MAX_BYTES", 1_048_576, minimum=1024)
# Django's own cap on a request body (answered 413 under /api/): at least the webhook's.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, EVENTS_WEBHOOK_MAX_BYTES)
EVENTS_SIGNATURE_MAX_AGE_SECONDS = 300
SQS_QUEUE_URL = env_str("SQS_QUEUE_URL")
# Azure Event Grid: the webhook's shared key (sent as ?key= or the X-Webhook-Key delivery header),
# and the Storage Queue Event Grid writes to (read by consume_azure_queue).
AZURE_EVENTS_WEBHOOK_KEY = env_str("AZURE_EVENTS_WEBHOOK_KEY")
AZURE_EVENTS_QUEUE = env_str("AZURE_EVENTS_QUEUE")
# The Queue endpoint when it is not https://<account>.queue.core.windows.net (Azurite: http://127.0.0.1:10001/<account>).
AZURE_QUEUE_ENDPOINT = env_str("AZURE_QUEUE_ENDPOINT").rstrip("/")
CF_ACCOUNT_ID = env_str("CF_ACCOUNT_ID")
CF_QUEUE_ID = env_str("CF_QUEUE_ID")
CF_API_TOKEN = env_str("CF_API_TOKEN")
CF_API_BASE_URL = env_str("CF_API_BASE_URL", "https://api.cloudflare.com/client/v4").rstrip("/")
# A consumer whose queue fails waits between half and all of min(this, 2**(n-1)) s after its n-th error in a row.
CONSUMER_BACKOFF_MAX_SECONDS = env_int("CONSUMER_BACKOFF_MAX_SECONDS", 60, minimum=1, maximum=3600)
# /healthz calls a consumer silent (degraded) when its heartbeat is older than this.
CONSUMER_STALE_SECONDS = env_int("CONSUMER_STALE_SECONDS", 180, minimum=30)

# --- Reconciliation -----------------------------------------------------------------------
RECONCILE_SCHEDULE_FIX = env_bool("RECONCILE_SCHEDULE_FIX", False)

# --- Housekeeping (manage.py prune, daily) ------------------------------------------------
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 90, minimum=1)
LINK_ATTEMPT_RETENTION_DAYS = env_int("LINK_ATTEMPT_RETENTION_DAYS", 90, minimum=1)
EXPIRED_UPLOAD_RETENTION_DAYS = env_int("EXPIRED_UPLOAD_RETENTION_DAYS", 30, minimum=1)

# --- Failure notices (uploads/services/notify.py) -----------------------------------------
# A digest at most every NOTIFY_DIGEST_MINUTES naming the uploads that ended failed since the
# last one: by email to NOTIFY_EMAILS (Django's mail settings below) and/or a JSON POST.
NOTIFY_EMAILS = env_list("NOTIFY_EMAILS", [])
NOTIFY_WEBHOOK_URL = env_str("NOTIFY_WEBHOOK_URL")
NOTIFY_DIGEST_MINUTES = env_int("NOTIFY_DIGEST_MINUTES", 15, minimum=1, maximum=1440)
NOTIFY_DIGEST_MAX_UPLOADS = env_int("NOTIFY_DIGEST_MAX_UPLOADS", 1000, minimum=1, maximum=100_000)
# Where stewards open the admin (the links in a notice): e.g. https://uploads.example.org
NOTIFY_ADMIN_BASE_URL = env_str("NOTIFY_ADMIN_BASE_URL").rstrip("/")
NOTIFY_TIMEOUT_SECONDS = env_int("NOTIFY_TIMEOUT_SECONDS", 10, minimum=1, maximum=120)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = NOTIFY_TIMEOUT_SECONDS
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "ckan-uploads@localhost")
EMAIL_SUBJECT_PREFIX = env_str("EMAIL_SUBJECT_PREFIX", "[CKAN uploads] ")

# --- Background tasks (django-q2) ---------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER: dict = {
    "name": "ckan-upload-reconciler",
    "workers": env_int("Q_WORKERS", 2, minimum=1, maximum=64),
    "timeout": 120,
    "retry": 180,  # must stay above timeout
    "max_attempts": 1,  # retries are the link service's business, decided in one place
    "catch_up": False,
    "save_limit": 1000,
    "ack_failures": True,
    "poll": 0.5,
    "label": "Background tasks",
    "sync": env_bool("Q_SYNC", False),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# The identity cache (which CKAN user a token belongs to) is shared by every process: in Redis
# when it is there, else in a table of the ledger's database (created by migrate, see
# uploads/apps.py), so web workers, qcluster and consumers ask CKAN once per token, not once each.
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "ckanrec",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "ckanrec_cache",
            "KEY_PREFIX": "ckanrec",
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "uploads.logfilters.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # botocore logs request URLs (with signatures) at DEBUG: keep it quiet whatever LOG_LEVEL.
        "botocore": {"level": "WARNING"},
        "boto3": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # azure-core logs every request and response at INFO.
        "azure": {"level": "WARNING"},
        "django_q": {"level": LOG_LEVEL},
    },
}

# --- HTTP security -------------------------------------------------------------------------
# TLS is usually terminated by a proxy in front: these depend on it, so they come from the
# environment (`check --deploy` names any that a production deployment left off).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
_PROXY_SSL_HEADER = env_str("DJANGO_SECURE_PROXY_SSL_HEADER")
if _PROXY_SSL_HEADER:
    # The proxy's header saying the client spoke https, e.g. X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SECURE_REFERRER_POLICY = "same-origin"
# The admin and the API docs load only their own static files; the admin's templates use a
# few inline style attributes, never inline scripts.
CONTENT_SECURITY_POLICY = env_str(
    "DJANGO_CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"

# --- Login throttling (django-axes) --------------------------------------------------------
# A lockout is per user name *and* client address, so a guesser cannot lock a steward out
# from elsewhere; superusers see and clear attempts and lockouts in the admin.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 30, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_ENABLED = env_bool("AXES_ENABLED", True)

# --- Metrics ------------------------------------------------------------------------------
# When set, /metrics wants `Authorization: Bearer <token>`; unset, it is open only in debug.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_PUBLIC = env_bool("METRICS_PUBLIC", DEBUG)
