"""A moto S3 + SQS server over real HTTP, and a bucket wired to send events into a queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
BUCKET = "ckan-uploads"
QUEUE = "ckan-upload-events"


class MotoServer:
    """One ThreadedMotoServer on loopback, on a free port."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def reset(self) -> None:
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        self._server.stop()

    def client(self, service: str, region: str = "us-east-1") -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


@dataclass
class StorageWorld:
    """A bucket (and optionally a queue receiving its ObjectCreated/Removed events)."""

    endpoint: str
    bucket: str
    s3: Any
    sqs: Any
    queue_url: str = ""

    def settings(self, prefix: str = "resources/api_uploads/") -> dict[str, Any]:
        return {
            "STORAGE_ENDPOINT_URL": self.endpoint,
            "STORAGE_REGION": "auto",
            "STORAGE_BUCKET": self.bucket,
            "STORAGE_ACCESS_KEY_ID": ACCESS_KEY,
            "STORAGE_SECRET_ACCESS_KEY": SECRET_KEY,
            "STORAGE_KEY_PREFIX": prefix,
            "STORAGE_PUBLIC_BASE_URL": f"{self.endpoint}/{self.bucket}",
        }

    def environ(self, prefix: str = "resources/api_uploads/") -> dict[str, str]:
        """The same configuration as environment variables, for child processes."""
        env = {name: str(value) for name, value in self.settings(prefix).items()}
        if self.queue_url:
            env.update(
                {
                    "SQS_QUEUE_URL": self.queue_url,
                    "AWS_ENDPOINT_URL_SQS": self.endpoint,
                    "AWS_REGION": "us-east-1",
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                }
            )
        return env


def make_storage_world(server: MotoServer, *, with_queue: bool = True, prefix: str = "") -> StorageWorld:
    """Create the bucket in us-east-1 (moto's SQS has no `auto` region) and wire its events."""
    s3 = server.client("s3")
    sqs = server.client("sqs")
    s3.create_bucket(Bucket=BUCKET)
    world = StorageWorld(endpoint=server.endpoint, bucket=BUCKET, s3=s3, sqs=sqs)
    if with_queue:
        queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        rule: dict[str, Any] = {
            "Id": "uploads-events",
            "QueueArn": arn,
            "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        }
        if prefix:
            rule["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [rule]}
        )
        world.queue_url = queue_url
    return world


def drain_queue(world: StorageWorld) -> list[dict[str, Any]]:
    """Read and delete every message in the queue (bodies parsed as JSON)."""
    bodies: list[dict[str, Any]] = []
    while True:
        got = world.sqs.receive_message(QueueUrl=world.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = got.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            world.sqs.delete_message(QueueUrl=world.queue_url, ReceiptHandle=message["ReceiptHandle"])
