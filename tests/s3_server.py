"""A real S3 API on loopback for tests: moto's server mode in its own process, with IAM on.

Two users, each allowed only its own bucket, so a run that used the plate's credentials for the
output (or the other way round) is refused, not silently accepted. After `enforce_auth()` every
request must be signed with a known key and allowed by that user's policy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class User:
    name: str
    key: str
    secret: str


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen
    users: dict[str, User] = field(default_factory=dict)

    def admin_client(self, service: str = "s3"):
        """A boto3 client used before auth is enforced (any key is accepted then)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id="admin",
            aws_secret_access_key="admin-secret",
            region_name="us-east-1",
        )

    def add_user(self, name: str, buckets: list[str]) -> User:
        """An IAM user with full access to `buckets` only."""
        iam = self.admin_client("iam")
        iam.create_user(UserName=name)
        arns = [f"arn:aws:s3:::{b}" for b in buckets] + [f"arn:aws:s3:::{b}/*" for b in buckets]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": arns}],
        }
        iam.put_user_policy(UserName=name, PolicyName="own", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        user = User(name, key["AccessKeyId"], key["SecretAccessKey"])
        self.users[name] = user
        return user

    def enforce_auth(self) -> None:
        req = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would be parsed away
        )
        urllib.request.urlopen(req, timeout=10).read()

    def options(self, user: str) -> dict:
        """s3fs options for a user (for the test's own reads; runs get a block name)."""
        u = self.users[user]
        return {
            "key": u.key,
            "secret": u.secret,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
        }

    def upload(self, local: Path, url: str, user: str) -> None:
        import s3fs

        fs = s3fs.S3FileSystem(**self.options(user), skip_instance_cache=True)
        fs.put(str(local), url.removeprefix("s3://"), recursive=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)


def start_s3_server(log: Path) -> S3Server:
    """Start `moto.server` on a free loopback port and wait until it answers."""
    port = free_port()
    env = dict(os.environ, MOTO_ALLOW_NONEXISTENT_REGION="true")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited ({proc.returncode}); see {log}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
            return S3Server(endpoint, proc)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto server did not answer on {endpoint} within 60 s; see {log}")
