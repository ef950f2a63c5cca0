from __future__ import annotations

import pytest
from django.test import override_settings

from uploads.services import privacy


@pytest.mark.parametrize(
    ("package", "private"),
    [
        ({"private": False, "state": "active"}, False),
        ({"private": True, "state": "active"}, True),
        # CKAN shows a draft only to those who may edit it (measured: anonymous package_show -> 403).
        ({"private": False, "state": "draft"}, True),
        ({}, False),
    ],
)
def test_a_dataset_is_private_when_ckan_hides_it_from_anonymous_users(package, private):
    assert privacy.is_private(package) is private


def test_by_default_only_public_datasets_files_may_be_public():
    assert privacy.may_be_public(False) is True
    assert privacy.may_be_public(True) is False


def test_the_opt_in_lets_private_datasets_files_be_public():
    with override_settings(PRIVATE_DATASET_UPLOADS="public"):
        assert privacy.may_be_public(True) is True


def test_an_unknown_setting_value_refuses_like_the_default():
    with override_settings(PRIVATE_DATASET_UPLOADS="maybe"):
        assert privacy.may_be_public(True) is False


def test_issuance_refuses_a_private_dataset_naming_the_setting():
    with pytest.raises(privacy.PrivateDatasetRefused) as refused:
        privacy.check_issuance({"id": "ds-1", "private": True})
    assert "PRIVATE_DATASET_UPLOADS=public" in str(refused.value)
    assert refused.value.package_id == "ds-1"


def test_issuance_returns_the_privacy_to_record():
    assert privacy.check_issuance({"id": "ds-1", "private": False}) is False
    with override_settings(PRIVATE_DATASET_UPLOADS="public"):
        assert privacy.check_issuance({"id": "ds-1", "private": True}) is True


def test_a_put_is_signed_public_read_only_where_the_store_has_object_acls():
    assert privacy.upload_acl() == ""
    with override_settings(STORAGE_OBJECT_ACLS=True):
        assert privacy.upload_acl() == "public-read"
