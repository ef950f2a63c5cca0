"""Azurite (Azure Blob + Queue emulator, npm) for the Azure tests, installed from tools/azurite's lock file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from tests.support.processes import ROOT

AZURITE_DIR = ROOT / "tools" / "azurite"
# Azurite's well-known development account (its README; also the Azure SDKs' emulator default).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue) service is successfully listening at (http://\S+)")


class AzuriteUnavailable(Exception):
    """Node/npm are missing, or Azurite could not be installed or started (the message says which)."""


def ensure_installed() -> Path:
    """The azurite binary, after `npm ci` from the committed lock file when node_modules is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise AzuriteUnavailable("Node.js (node and npm) is not installed")
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=AZURITE_DIR, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0 or not binary.exists():
            raise AzuriteUnavailable(f"npm ci in {AZURITE_DIR} failed: {done.stderr[-2000:]}")
    return binary


class Azurite:
    """One Azurite process, in memory, on free loopback ports (Blob and Queue)."""

    def __init__(self) -> None:
        binary = ensure_installed()
        self._proc = subprocess.Popen(
            [
                str(binary),
                "--silent",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--blobHost",
                "127.0.0.1",
                "--queueHost",
                "127.0.0.1",
                "--tableHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--queuePort",
                "0",
                "--tablePort",
                "0",
            ],
            cwd=AZURITE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.endpoints: dict[str, str] = {}
        self._output: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                self._output.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.endpoints[match.group(1)] = match.group(2).rstrip("/")
                    if len(self.endpoints) == 2:
                        ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise AzuriteUnavailable(f"Azurite did not start within 60 s: {''.join(self._output)[-2000:]}")
        self.blob_endpoint = f"{self.endpoints['Blob']}/{ACCOUNT}"
        self.queue_endpoint = f"{self.endpoints['Queue']}/{ACCOUNT}"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def blob_service(self) -> BlobServiceClient:
        return BlobServiceClient(self.blob_endpoint, credential={"account_name": ACCOUNT, "account_key": KEY})

    def queue_service(self) -> QueueServiceClient:
        return QueueServiceClient(self.queue_endpoint, credential={"account_name": ACCOUNT, "account_key": KEY})


@dataclass
class AzureWorld:
    """A fresh container, and a Storage Queue standing in for Event Grid's queue destination."""

    azurite: Azurite
    container: str
    queue: str

    def settings(self, prefix: str = "resources/api_uploads/") -> dict[str, Any]:
        return {
            "STORAGE_BACKEND": "azure",
            "AZURE_STORAGE_ACCOUNT": ACCOUNT,
            "AZURE_STORAGE_KEY": KEY,
            "AZURE_STORAGE_CONTAINER": self.container,
            "AZURE_STORAGE_ENDPOINT": self.azurite.blob_endpoint,
            "AZURE_QUEUE_ENDPOINT": self.azurite.queue_endpoint,
            "AZURE_EVENTS_QUEUE": self.queue,
            "STORAGE_KEY_PREFIX": prefix,
            "STORAGE_PUBLIC_BASE_URL": "",
        }

    def environ(self, prefix: str = "resources/api_uploads/") -> dict[str, str]:
        """The same configuration as environment variables, for child processes."""
        return {name: str(value) for name, value in self.settings(prefix).items()}

    def container_client(self) -> Any:
        return self.azurite.blob_service().get_container_client(self.container)

    def queue_client(self) -> Any:
        return self.azurite.queue_service().get_queue_client(self.queue)


def make_azure_world(azurite: Azurite) -> AzureWorld:
    suffix = uuid.uuid4().hex[:12]
    world = AzureWorld(azurite=azurite, container=f"ckan-uploads-{suffix}", queue=f"blob-events-{suffix}")
    world.container_client().create_container()
    world.queue_client().create_queue()
    return world


def require_node() -> bool:
    """REQUIRE_NODE=1 (CI): tests that need Node (Azurite, workerd) must run, never skip."""
    return bool(os.environ.get("REQUIRE_NODE"))
