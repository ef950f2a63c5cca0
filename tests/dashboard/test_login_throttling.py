"""django-axes: repeated failed logins lock a user out from that address; superusers see it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from dashboard.roles import STEWARDS


def log_in(client, username: str, password: str, address: str = "203.0.113.7"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_fifty_wrong_passwords_then_the_right_one_is_refused_with_429(client, steward):
    for _ in range(50):
        response = log_in(client, "stella", "wrong")
        assert response.status_code in {200, 429}
    assert response.status_code == 429
    locked = log_in(client, "stella", "pw")
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_the_lockout_starts_at_the_limit_and_is_per_user_and_address(client, steward):
    with override_settings(AXES_FAILURE_LIMIT=3):
        statuses = [log_in(client, "stella", "wrong").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        # The same user from another address, and another user from this one, may still log in.
        assert log_in(client, "stella", "pw", address="198.51.100.9").status_code == 302
        client.logout()
        User.objects.create_user("other", password="pw", is_staff=True)
        assert log_in(client, "other", "pw").status_code == 302


@pytest.mark.django_db
def test_a_success_before_the_limit_resets_the_count(client, steward):
    with override_settings(AXES_FAILURE_LIMIT=3):
        log_in(client, "stella", "wrong")
        log_in(client, "stella", "wrong")
        assert log_in(client, "stella", "pw").status_code == 302
        client.logout()
        assert [log_in(client, "stella", "wrong").status_code for _ in range(2)] == [200, 200]


@pytest.mark.django_db
def test_superusers_see_the_attempts_in_the_admin_and_stewards_do_not(client, steward, superuser):
    log_in(client, "stella", "wrong")
    client.force_login(superuser)
    page = client.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    assert "stella" in page.content.decode()
    client.force_login(steward)
    assert steward.groups.filter(name=STEWARDS).exists()
    assert client.get("/admin/axes/accessattempt/").status_code == 403
