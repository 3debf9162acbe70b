"""A real S3 server on this machine: moto's, on 127.0.0.1 (a free port), speaking the HTTP S3 protocol.

For the tests (tests/s3/conftest.py, with authentication switched on there) and for
``bench predict --scene-url loopback``. :class:`CountingMotoServer` counts the bytes of the
GET responses it serves, by path, so a caller sees what went over the wire. moto is in the
test extra: importing this module without it raises ImportError (callers turn it into one line).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

FAKE_REGION = "us-east-1"


class CountingMotoServer(ThreadedMotoServer):  # type: ignore[misc]
    """moto's threaded server, counting the bytes of the GET responses it serves, by path (``/bucket/key``).

    The same WSGI app and request handler as ``ThreadedMotoServer._server_entry``, wrapped: what
    the tests measure is what went over the wire (a window read must not fetch the whole object).
    """

    def __init__(self, ip_address: str, port: int) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        self.served: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            body = app(environ, start_response)
            if environ["REQUEST_METHOD"] != "GET":
                return body
            chunks = list(body)
            self.served[environ.get("PATH_INFO", "")] += sum(len(c) for c in chunks)
            self.requests[environ.get("PATH_INFO", "")] += 1
            return chunks

        self._server = make_server(self._ip_address, self._port, counting, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


@dataclass(frozen=True)
class LoopbackStore:
    """A running loopback server with one bucket; ``environment`` is what a process needs to use it."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    server: CountingMotoServer
    environment: dict[str, str]  # fake keys, the endpoint, no profile: for the bench's own subprocesses only

    def upload(self, path: Path, key: str | None = None) -> str:
        """Upload the file at ``path`` to the bucket (as ``key``, default its name); its s3:// URL."""
        key = key or path.name
        client(self.endpoint, self.environment).upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{key}"

    def served(self, key: str) -> tuple[int, int]:
        """(bytes, GET requests) served so far for ``key`` of the bucket."""
        path = f"/{self.bucket}/{key}"
        return self.server.served[path], self.server.requests[path]


def client(endpoint: str, environment: dict[str, str]) -> Any:
    """A boto3 S3 client of ``endpoint`` signing with the keys of ``environment``."""
    import boto3

    return boto3.session.Session(aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
                                 region_name=FAKE_REGION).client("s3", endpoint_url=endpoint)


def fake_environment(endpoint: str, home: Path) -> dict[str, str]:
    """The AWS variables that point a process at ``endpoint`` with fake keys (moto without auth takes any),
    and away from this machine's ~/.aws (its files named under ``home``, which holds none)."""
    return {"AWS_ACCESS_KEY_ID": "loopback-bench", "AWS_SECRET_ACCESS_KEY": "loopback-bench-not-a-secret",
            "AWS_DEFAULT_REGION": FAKE_REGION, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(home / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials")}


@contextlib.contextmanager
def loopback_store(bucket: str = "geoseg-bench") -> Iterator[LoopbackStore]:
    """A moto server on 127.0.0.1 (free port) with ``bucket`` made, stopped on exit."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise, on stderr
    server = CountingMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        with tempfile.TemporaryDirectory(prefix="geoseg-loopback-aws-") as home:
            store = LoopbackStore(endpoint, bucket, server, fake_environment(endpoint, Path(home)))
            client(endpoint, store.environment).create_bucket(Bucket=bucket)
            yield store
    finally:
        server.stop()
