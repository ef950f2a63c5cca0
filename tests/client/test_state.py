from __future__ import annotations

import os
import stat
import time

from ckan_upload.state import StateStore, Target, UploadState, state_dir, state_key

RESOURCE = Target(resource_id="r-1")


def key(path, **changes):
    values = {"server": "http://svc", "path": path, "size": 10, "mtime_ns": 5, "target": RESOURCE, **changes}
    return state_key(**values)


def saved(upload_id: str = "u-1") -> UploadState:
    return UploadState(
        upload_id=upload_id, resource_id="r-1", multipart=True, part_size=5, part_count=2, created_at=time.time()
    )


def test_the_same_command_on_the_same_file_finds_the_same_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = tmp_path / "a" / ".." / "data.bin"
    assert key(tmp_path / "data.bin") == key(relative)
    assert key(tmp_path / "data.bin") == key(tmp_path / "data.bin", server="http://svc/")


def test_another_server_file_version_or_target_gets_another_key(tmp_path):
    path = tmp_path / "data.bin"
    base = key(path)
    assert key(path, server="http://other") != base
    assert key(path, size=11) != base
    assert key(path, mtime_ns=6) != base
    assert key(tmp_path / "other.bin") != base
    assert key(path, target=Target(resource_id="r-2")) != base
    assert key(path, target=Target(dataset_id="d", name="n")) != key(path, target=Target(dataset_id="d", name="m"))


def test_a_saved_state_is_read_back_and_only_its_owner_may_read_it(tmp_path):
    store = StateStore(tmp_path / "states")
    state = saved()
    store.save("k", state)
    assert store.load("k") == state
    mode = stat.S_IMODE((tmp_path / "states" / "k.json").stat().st_mode)
    assert mode == 0o600
    assert list((tmp_path / "states").iterdir()) == [tmp_path / "states" / "k.json"]


def test_a_missing_or_broken_state_file_means_start_anew(tmp_path):
    store = StateStore(tmp_path)
    assert store.load("absent") is None
    (tmp_path / "broken.json").write_text("{not json")
    assert store.load("broken") is None
    (tmp_path / "old.json").write_text('{"upload_id": "x"}')
    assert store.load("old") is None


def test_removing_a_state_twice_is_harmless(tmp_path):
    store = StateStore(tmp_path)
    store.save("k", saved())
    store.remove("k")
    store.remove("k")
    assert store.load("k") is None


def test_pruning_drops_only_states_older_than_any_resumable_upload(tmp_path):
    store = StateStore(tmp_path)
    store.save("fresh", saved("fresh"))
    store.save("stale", saved("stale"))
    nine_days_ago = time.time() - 9 * 24 * 3600
    os.utime(tmp_path / "stale.json", (nine_days_ago, nine_days_ago))
    store.prune()
    assert store.load("fresh") is not None
    assert store.load("stale") is None


def test_the_state_lives_in_the_xdg_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert state_dir() == tmp_path / "ckan-upload"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".cache" / "ckan-upload"
