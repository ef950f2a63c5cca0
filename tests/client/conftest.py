from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ckan_upload.cli import main
from tests.client.fake_service import TOKEN, FakeService


@pytest.fixture
def fake() -> Iterator[FakeService]:
    """The fake service: 1 KiB parts, multipart above 4 KiB."""
    service = FakeService()
    yield service
    service.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Where the client keeps its resume files during the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ckan-upload"


@pytest.fixture
def run(fake, cache, capsys):
    """Run the command in-process against the fake; returns (exit code, parsed --json output or stdout)."""

    def go(*args: str, as_json: bool = True) -> tuple[int, dict | str]:
        argv = [*args, "--server", fake.url, "--token", TOKEN, "--quiet"] + (["--json"] if as_json else [])
        code = main(argv)
        out = capsys.readouterr().out
        if as_json:
            lines = [line for line in out.splitlines() if line.strip()]
            return code, json.loads(lines[-1]) if lines else {}
        return code, out

    return go
