"""Arguments, environment, exit codes and Ctrl-C of the `ckan-upload` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ckan_upload.cli import build_parser, byte_rate, main, request_from
from tests.client.fake_service import TOKEN


def parse(*argv: str):
    parser = build_parser()
    return request_from(parser.parse_args(list(argv)), parser)


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "temps.csv"
    path.write_bytes(b"a,b\n1,2\n")
    return path


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    monkeypatch.delenv("CKAN_UPLOAD_SERVER", raising=False)
    monkeypatch.delenv("CKAN_API_TOKEN", raising=False)


def test_it_takes_the_server_and_token_from_the_environment(csv, monkeypatch):
    monkeypatch.setenv("CKAN_UPLOAD_SERVER", "http://svc")
    monkeypatch.setenv("CKAN_API_TOKEN", "tok")
    request = parse(str(csv), "--resource", "r-1")
    assert (request.server, request.token, request.target.resource_id) == ("http://svc", "tok", "r-1")


def test_options_win_over_the_environment(csv, monkeypatch):
    monkeypatch.setenv("CKAN_UPLOAD_SERVER", "http://svc")
    monkeypatch.setenv("CKAN_API_TOKEN", "tok")
    request = parse(str(csv), "--resource", "r-1", "--server", "http://other", "--token", "mine")
    assert (request.server, request.token) == ("http://other", "mine")


def test_it_guesses_the_content_type_from_the_name_unless_told(csv, tmp_path):
    common = ["--resource", "r", "--server", "http://s", "--token", "t"]
    assert parse(str(csv), *common).content_type == "text/csv"
    assert parse(str(csv), *common, "--content-type", "text/plain").content_type == "text/plain"
    unknown = tmp_path / "blob.zzz-unknown"
    unknown.write_bytes(b"x")
    assert parse(str(unknown), *common).content_type == "application/octet-stream"


def test_the_defaults_leave_multipart_and_hashing_to_the_size(csv):
    request = parse(str(csv), "--resource", "r", "--server", "http://s", "--token", "t")
    assert (request.multipart, request.sha256, request.jobs, request.wait, request.limit_rate) == (
        None,
        None,
        4,
        False,
        None,
    )
    forced = parse(str(csv), "--resource", "r", "--server", "s", "--token", "t", "--no-multipart", "--no-sha256")
    assert (forced.multipart, forced.sha256) == (False, False)


@pytest.mark.parametrize(
    "argv",
    [
        [],  # neither --resource nor --dataset
        ["--resource", "r", "--dataset", "d", "--name", "n"],
        ["--dataset", "d"],  # no --name
        ["--resource", "r", "--name", "n"],
        ["--resource", "r", "--jobs", "0"],
        ["--resource", "r", "--limit-rate", "fast"],
    ],
)
def test_it_refuses_inconsistent_arguments_with_exit_code_2(csv, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(str(csv), *argv, "--server", "http://s", "--token", "t")
    assert exc.value.code == 2


def test_it_says_what_is_missing_without_a_server_or_token(csv, capsys):
    with pytest.raises(SystemExit):
        parse(str(csv), "--resource", "r", "--token", "t")
    assert "CKAN_UPLOAD_SERVER" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(str(csv), "--resource", "r", "--server", "http://s")
    assert "CKAN_API_TOKEN" in capsys.readouterr().err


def test_it_refuses_a_file_it_cannot_read(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(str(tmp_path / "absent.csv"), "--resource", "r", "--server", "http://s", "--token", "t")
    assert exc.value.code == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "rate"), [("1000", 1000), ("512k", 512 * 1024), ("2M", 2 * 1024**2), ("1GiB", 1024**3)]
)
def test_it_reads_rates_with_binary_suffixes(text, rate):
    assert byte_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "0", "-5k"])
def test_it_refuses_a_rate_that_is_not_one(text):
    with pytest.raises(argparse.ArgumentTypeError):
        byte_rate(text)


def test_a_refused_token_exits_3_with_the_services_reason(fake, cache, csv, capsys):
    code = main([str(csv), "--resource", "r-1", "--server", fake.url, "--token", "wrong", "--json"])
    assert code == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["status"] == 401
    assert "no token" in captured.err


def test_an_unreachable_service_exits_4(cache, csv, monkeypatch, capsys):
    monkeypatch.setattr("ckan_upload.retry.Backoff.delay", lambda self, attempt, rng=None: 0.01)
    code = main([str(csv), "--resource", "r-1", "--server", "http://127.0.0.1:9", "--token", "t"])
    assert code == 4
    assert "cannot reach the service" in capsys.readouterr().err


def test_ctrl_c_exits_130_and_the_rerun_resumes(fake, cache, tmp_path, run):
    path = tmp_path / "big.bin"
    data = os.urandom(6 * 1024)
    path.write_bytes(data)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parent)}
    command = [sys.executable, "-m", "ckan_upload", str(path), "--resource", "r-1", "--server", fake.url]
    command += ["--token", TOKEN, "--jobs", "1", "--limit-rate", "2k", "--json"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (fake.uploads and fake.only_upload().parts) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.uploads and fake.only_upload().parts, "no part arrived"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert b"run the same command again to resume" in err
    assert list(cache.glob("*.json"))
    upload = fake.only_upload()
    held = sorted(upload.parts)
    assert held and len(held) < 6

    code, result = run(str(path), "--resource", "r-1")
    assert code == 0, result
    assert result["upload_id"] == upload.id
    assert result["parts_skipped"] == held
    assert result["parts_sent"] == [n for n in range(1, 7) if n not in held]
    assert upload.object == data
    assert not list(cache.glob("*.json"))
