from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from tests.support.moto import MotoServer, StorageWorld, make_storage_world


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def storage_world(moto_server: MotoServer) -> Iterator[StorageWorld]:
    """A fresh moto bucket with S3 events into SQS, and the settings pointing at it."""
    moto_server.reset()
    world = make_storage_world(moto_server, with_queue=True)
    with override_settings(**world.settings()):
        yield world
