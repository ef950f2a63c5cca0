"""Settings for the test suite: the base settings without the developer's `.env` file."""

from __future__ import annotations

import os
import tempfile

# Tests describe their own world; a developer's .env (say, from `make ckan`) must not leak in.
os.environ["DOTENV_PATH"] = os.devnull
# One test database per pytest process, so parallel runs (and the qcluster processes that
# end-to-end tests start against it) never share one by accident.
os.environ.setdefault(
    "DJANGO_TEST_SQLITE_NAME", os.path.join(tempfile.gettempdir(), f"ckanrec-test-{os.getpid()}.sqlite3")
)

from dashboard.settings import *  # noqa: F403
from dashboard.settings import DATABASES, MIDDLEWARE

if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": f"test_ckanrec_{os.getpid()}"}

# Not the development key: child processes run with debug off (which refuses that key), and
# they must share this one, since django-q signs the tasks the test process enqueues.
SECRET_KEY = "test-only-secret-key-shared-with-child-processes-7c4f0b2e9a1d5e3f8b6a"  # noqa: S105 (tests only)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files are collected by `make run`, not by the tests.
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("whitenoise.")]
# The suite reads the counters freely; tests/dashboard/test_metrics_access.py checks the lock.
METRICS_PUBLIC = True
