"""A real S3 server on this machine: moto's, on 127.0.0.1 (a free port), speaking the HTTP S3 protocol.

For the tests (tests/s3_fixtures.py, with authentication switched on there) and for
``bench predict --scene-url loopback``. :class:`CountingMotoServer` counts the bytes of the
GET responses it serves, by path, so a caller sees what went over the wire. moto is in the
test extra: importing this module without it raises ImportError (callers turn it into one line).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
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

    def __init__(self, ip_address: str, port: int, direct_ranges: bool = False) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        self.served: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.direct_ranges = direct_ranges

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            """moto's answer (or :func:`_ranged_get`'s), its GET bytes and requests counted."""
            if environ["REQUEST_METHOD"] != "GET":
                return app(environ, start_response)
            ranged = _ranged_get(environ) if self.direct_ranges else None
            if ranged is not None:
                start_response(*ranged[:2])
            chunks = [ranged[2]] if ranged is not None else list(app(environ, start_response))
            self.served[environ.get("PATH_INFO", "")] += sum(len(c) for c in chunks)
            self.requests[environ.get("PATH_INFO", "")] += 1
            return chunks

        self._server = make_server(self._ip_address, self._port, counting, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def _ranged_get(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
    """(status, headers, body) of a path-style GET of one byte range of an existing object, read from the
    object's buffer; None for anything else (moto answers it).

    moto itself reads the whole object for every ranged GET, under the object's lock (its
    range handler slices ``key.value``): a window of a 700 MB scene then costs a 700 MB read
    at the server, one request at a time, which no real store does. Only the bench's server
    (no authentication) answers ranges here; the tests' server is moto's alone.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    found = RANGE.match(environ.get("HTTP_RANGE", ""))
    bucket_name, _, name = environ.get("PATH_INFO", "").lstrip("/").partition("/")
    if found is None or environ.get("QUERY_STRING") or not name:
        return None
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets.get(bucket_name)
    key = bucket.keys.get(name) if bucket is not None else None
    begin = int(found.group(1))
    if key is None or begin >= key.size:
        return None
    end = min(int(found.group(2) or key.size - 1), key.size - 1)
    with key.lock:  # the buffer's position is shared (moto's own reads take this lock too)
        etag = key.etag
        key._value_buffer.seek(begin)
        body = key._value_buffer.read(end - begin + 1)
    headers = [("Content-Type", "binary/octet-stream"), ("Content-Length", str(len(body))),
               ("Content-Range", f"bytes {begin}-{end}/{key.size}"), ("ETag", etag),
               ("Last-Modified", key.last_modified_RFC1123), ("Accept-Ranges", "bytes")]
    return "206 Partial Content", headers, body


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
def loopback_store(bucket: str = "geoseg-bench", direct_ranges: bool = True) -> Iterator[LoopbackStore]:
    """A moto server on 127.0.0.1 (free port) with ``bucket`` made, stopped on exit; ``direct_ranges``: ranged
    GETs read only their range (:func:`_ranged_get`)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise, on stderr
    server = CountingMotoServer(ip_address="127.0.0.1", port=0, direct_ranges=direct_ranges)
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
