"""gunicorn's access log (as `serve` starts it) keeps upload paths and drops queries and secrets."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import requests

from dashboard.management.commands.serve import gunicorn_command
from tests.dashboard.test_serve_command import free_port
from tests.support.processes import ROOT, wait_for

pytestmark = pytest.mark.integration

UPLOAD_ID = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"


def test_the_access_log_has_the_path_but_no_query_string_or_token(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "CKAN_", "DJANGO_", "METRICS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DOTENV_PATH": os.devnull,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "DJANGO_DEBUG": "1",
        }
    )
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            gunicorn_command(f"127.0.0.1:{port}", workers=1),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def answered() -> bool:
                try:
                    url = f"http://127.0.0.1:{port}/api/v1/no-such/{UPLOAD_ID}"
                    query = "?X-Amz-Signature=feedface0123&token=hunter2-secret"
                    return requests.get(url + query, timeout=5, headers={"Referer": url + query}).status_code == 404
                except requests.RequestException:
                    return False

            wait_for(answered, timeout=60, what="gunicorn to answer")
            wait_for(
                lambda: f'"GET /api/v1/no-such/{UPLOAD_ID}' in log_path.read_text(), timeout=10, what="the log line"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    output = log_path.read_text()
    line = next(line for line in output.splitlines() if f'"GET /api/v1/no-such/{UPLOAD_ID}' in line)
    assert f'"GET /api/v1/no-such/{UPLOAD_ID} HTTP/1.1" 404 ' in line
    assert "feedface0123" not in output
    assert "hunter2" not in output
    assert "?" not in line


def test_gunicorns_logs_go_through_the_redaction_filter():
    import logging

    from gunicorn.config import Config

    from dashboard.gunicorn_logging import RedactingLogger

    logger = RedactingLogger(Config())
    record = logging.LogRecord(
        "gunicorn.error", logging.INFO, __file__, 1, "url %s", ("?X-Amz-Signature=abc123",), None
    )
    for log in (logger.access_log, logger.error_log):
        assert all(item.filter(record) for item in log.filters)
    assert record.getMessage() == "url ?X-Amz-Signature=[redacted]"
