"""gunicorn's logger with the application's redaction filter on its access and error logs."""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

from uploads.logfilters import RedactSecretsFilter


class RedactingLogger(glogging.Logger):
    """The stock gunicorn logger whose records pass through RedactSecretsFilter."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(item, RedactSecretsFilter) for item in log.filters):
                log.addFilter(RedactSecretsFilter())
