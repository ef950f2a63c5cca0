"""gunicorn settings shared by `manage.py serve` and the Procfile (``--config python:dashboard.gunicorn_conf``).

The access log records the method, the path without its query string (a query may carry a
presigned signature or a token), the status, the size, the duration and the user agent; no
referrer. Every line, access and error alike, goes through the application's redaction filter.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

logger_class = "dashboard.gunicorn_logging.RedactingLogger"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'

# A multipart `complete` waits while the store assembles the object (minutes, for S3, at worst):
# a worker must not be killed for that (STORAGE_COMPLETE_TIMEOUT_SECONDS, plus a margin).
timeout = int(os.environ.get("STORAGE_COMPLETE_TIMEOUT_SECONDS") or 600) + 60
