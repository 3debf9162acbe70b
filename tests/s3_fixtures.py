"""A real S3 server for the tests: moto's, on 127.0.0.1, speaking the HTTP S3 protocol, with authentication on.

A pytest plugin (registered by tests/conftest.py), so every test folder (tests/s3, tests/stac) can use
``s3_server`` and ``s3_env``.

The session fixture starts ``moto.server.ThreadedMotoServer`` on a free port, creates an IAM
user with an access key (moto then checks every request's signature against it: wrong
credentials get a real 403), makes the ``scenes`` bucket and yields an :class:`S3Server`.
The credentials are fake and set in the environment for the session, as the standard AWS
chain reads them (GDAL, botocore and the Dask workers spawned by the tests inherit them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from geoseg_batch.io.loopback import CountingMotoServer

# The test extra; without it the S3 tests skip. Looked up, not imported: every pytest run loads this plugin,
# and importing moto and s3fs costs most of a second.
MISSING = ("" if find_spec("s3fs") and find_spec("moto") and find_spec("werkzeug")
           else "the S3 tests need moto[server] and s3fs (pip install -e '.[test]')")

BUCKET = "scenes"


@dataclass(frozen=True)
class S3Server:
    """The loopback S3 server: its endpoint (``http://127.0.0.1:PORT``) and the access key it accepts."""

    endpoint: str
    access_key: str
    secret_key: str
    server: CountingMotoServer
    bucket: str = BUCKET

    def served(self, key: str) -> int:
        """Bytes of the GET responses served so far for ``key`` of the bucket."""
        return self.server.served[f"/{self.bucket}/{key}"]

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``."""
        return self.endpoint.split("://", 1)[1]

    def client(self) -> Any:
        """A boto3 S3 client signing with the server's access key."""
        import boto3

        return boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                                     region_name="us-east-1").client("s3", endpoint_url=self.endpoint)

    def upload(self, path: Path, key: str | None = None) -> str:
        """Upload the file at ``path`` to the bucket (as ``key``, default its name); its s3:// URL."""
        key = key or path.name
        self.client().upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{key}"


def _admin_key(endpoint: str) -> tuple[str, str]:
    """(access key id, secret) of a new IAM user allowed everything, made while the server asks for no auth."""
    import boto3

    session = boto3.session.Session(aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                                    region_name="us-east-1")
    iam = session.client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="geoseg-tests")
    policy = iam.create_policy(PolicyName="everything", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    iam.attach_user_policy(UserName="geoseg-tests", PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName="geoseg-tests")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _require_auth(endpoint: str, after: float) -> None:
    """From now on (after ``after`` unauthenticated requests), the server checks every request's signature."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=str(after).encode(),
                                                       headers={"Content-Type": "text/plain"}, method="POST"),
                                timeout=10) as answer:
        answer.read()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The loopback S3 server with the ``scenes`` bucket; AWS credentials (fake) set in the environment."""
    if MISSING:
        pytest.skip(MISSING)
    from geoseg_batch.io.loopback import CountingMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise, on stderr
    server = CountingMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    home = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_CONFIG_FILE", str(home / "config"))  # nothing from this machine's ~/.aws
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        access, secret = _admin_key(endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", access)
        env.setenv("AWS_SECRET_ACCESS_KEY", secret)
        s3 = S3Server(endpoint, access, secret, server)
        s3.client().create_bucket(Bucket=BUCKET)
        _require_auth(endpoint, 0)
        _RUNNING.append(s3)
        try:
            yield s3
        finally:
            _RUNNING.remove(s3)
            _require_auth(endpoint, float("inf"))
            server.stop()


_RUNNING: list[S3Server] = []  # the session's server, once started


@pytest.fixture()
def other_moto_servers_take_any_key() -> Iterator[None]:
    """For a test whose code starts its own moto server in this process (the bench's loopback, with fake keys):
    moto's authentication state is the process's, so while the session's server checks signatures every moto
    server here does. Turned off for the test, back on after; nothing to do before the session's server starts."""
    for s3 in _RUNNING:
        _require_auth(s3.endpoint, float("inf"))
    try:
        yield
    finally:
        for s3 in _RUNNING:
            _require_auth(s3.endpoint, 0)


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server, named by ``AWS_ENDPOINT_URL`` (as a user points every AWS tool at it) for one test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    return s3_server
