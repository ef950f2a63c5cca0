"""The object stores, one module each, behind one interface (``uploads.stores.base.Store``).

``active_store()`` is the store STORAGE_BACKEND selects (``s3``: R2, S3 or moto; ``azure``:
Azure Blob Storage or Azurite). Only ``uploads.storage`` calls it; nothing above that facade
knows which cloud it runs on.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from uploads.stores.base import Store

BACKENDS = ("s3", "azure")


@functools.cache
def active_store() -> Store:
    """The configured store (built once per process; its SDK client is built on first use)."""
    backend = settings.STORAGE_BACKEND
    if backend == "azure":
        from uploads.stores.azure import AzureBlobStore

        return AzureBlobStore()
    from uploads.stores.s3 import S3Store

    return S3Store()


@receiver(setting_changed)
def _forget_store_when_settings_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "STORAGE_BACKEND":
        active_store.cache_clear()
