from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
application = get_wsgi_application()

# gunicorn runs no system checks: refuse to serve (debug off with a development secret key,
# storage half configured, ...) with the same messages `manage.py check` prints.
from uploads.checks import refuse_to_start_on_errors  # noqa: E402 (needs the apps loaded above)

refuse_to_start_on_errors()
