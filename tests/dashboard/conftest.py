from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from dashboard.roles import OPERATORS, STEWARDS, ensure_roles
from uploads.models import Upload, UploadState


def make_upload(**fields: Any) -> Upload:
    """An Upload row as the services would have left it."""
    upload_id = fields.pop("id", None) or uuid.uuid4()
    resource_id = fields.pop("resource_id", str(uuid.uuid4()))
    now = timezone.now()
    values: dict[str, Any] = {
        "resource_id": resource_id,
        "package_id": "pkg-1",
        "filename": "data.csv",
        "content_type": "text/csv",
        "bucket": "bucket",
        "key": f"resources/api_uploads/{resource_id}/{upload_id}/data.csv",
        "requested_by": "alice",
        "issued_at": now - timedelta(minutes=30),
        "expires_at": now + timedelta(minutes=30),
        "state": UploadState.ISSUED,
    }
    values.update(fields)
    return Upload.objects.create(id=upload_id, **values)


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
