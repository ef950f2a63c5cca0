from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class UploadsConfig(AppConfig):
    name = "uploads"
    verbose_name = "Uploads"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from uploads import checks  # noqa: F401  (registers the system checks)

        post_migrate.connect(_create_cache_table, sender=self)


def _create_cache_table(*, using: str = "default", **kwargs: Any) -> None:
    """The shared cache's table when the cache is the database (no Redis): ``migrate`` makes it too."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)
