from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from dashboard.roles import OPERATORS, STEWARDS, ensure_roles
from tests.support.factories import make_upload as build_upload
from uploads.models import Upload


def make_upload(**fields: Any) -> Upload:
    """An Upload row as the services would have left it, issued half an hour ago."""
    now = timezone.now()
    fields.setdefault("package_id", "pkg-1")
    fields.setdefault("requested_by", "alice")
    fields.setdefault("issued_at", now - timedelta(minutes=30))
    fields.setdefault("expires_at", now + timedelta(minutes=30))
    return build_upload(**fields)


def _staff(username: str, group: str | None = None, *, superuser: bool = False) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True, is_superuser=superuser)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def roles(db) -> None:
    ensure_roles()


@pytest.fixture
def steward(roles) -> User:
    return _staff("stella", STEWARDS)


@pytest.fixture
def operator(roles) -> User:
    return _staff("otto", OPERATORS)


@pytest.fixture
def superuser(db) -> User:
    return _staff("root", superuser=True)


@pytest.fixture
def as_steward(client, steward):
    client.force_login(steward)
    return client


@pytest.fixture
def as_operator(client, operator):
    client.force_login(operator)
    return client


def queued_links() -> list[tuple[str, ...]]:
    """The (upload_id, trigger, triggered_by) of every link task waiting in the ORM broker."""
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    tasks = [SignedPackage.loads(row.payload) for row in OrmQ.objects.order_by("id")]
    return [tuple(task["args"]) for task in tasks if task["func"] == "uploads.tasks.link_upload_task"]
