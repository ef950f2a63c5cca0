from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dashboard.roles import ensure_roles


class Command(BaseCommand):
    help = 'Create (or refresh) the "Data stewards" and "Operators" groups with their permissions.'

    def handle(self, *args: Any, **options: Any) -> None:
        for name, codenames in ensure_roles().items():
            self.stdout.write(f"{name}: {', '.join(codenames)}")
