"""The two roles people get: stewards see the ledger, operators also replay and fix."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction

STEWARDS = "Data stewards"
OPERATORS = "Operators"

_LEDGER_MODELS = ("upload", "storageevent", "linkattempt", "reconcilerun", "discrepancy")
_VIEW = [f"view_{model}" for model in _LEDGER_MODELS]
_OPERATE = ["replay_upload", "change_discrepancy"]


@transaction.atomic
def ensure_roles() -> dict[str, list[str]]:
    """Create or update both groups so they hold exactly their permissions; return them."""
    result = {}
    for name, codenames in ((STEWARDS, _VIEW), (OPERATORS, _VIEW + _OPERATE)):
        permissions = list(Permission.objects.filter(content_type__app_label="uploads", codename__in=codenames))
        missing = set(codenames) - {p.codename for p in permissions}
        if missing:
            raise RuntimeError(f"permissions missing (run migrate first): {', '.join(sorted(missing))}")
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions)
        result[name] = sorted(p.codename for p in permissions)
    return result
