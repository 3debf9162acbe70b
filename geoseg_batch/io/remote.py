"""Object storage settings in one place: what GDAL and fsspec (s3fs) are told, so both see the same store.

:class:`CloudSettings` is plain data without secrets (endpoint, region, profile, anonymous),
made once from a job's ``storage:`` block and the standard AWS environment
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``/``AWS_DEFAULT_REGION``). It
travels with the tasks that read scenes (pickled with them) and is applied on the worker
before a file is opened, so an external cluster's workers read with the same settings.
Credentials are never in it: GDAL and botocore both read them from the standard chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, the profile in
``~/.aws``, the instance role) on the machine that makes the request.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from geoseg_batch.errors import ConfigError, MissingInputError
from geoseg_batch.io.urls import as_url, fsspec_path, split

if TYPE_CHECKING:
    from geoseg_batch.config import StorageSpec

HTTP_RETRIES = 3  # GDAL's and botocore's retries of a failed request (5xx, throttling), with back-off
HTTP_RETRY_DELAY_S = 0.5  # GDAL's first back-off; it doubles on each retry
CONNECT_TIMEOUT_S = 5  # a store that does not answer fails the run within seconds, not minutes
CURL_CACHE_BYTES = 64 * 2**20  # GDAL's cache of ranges read over HTTP (all files of the process together)

GDAL_BASE = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # opening a file lists no prefix (one GET instead of many)
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.vrt,.jp2,.ovr,.msk,.aux.xml",  # no probing of side files
    "CPL_VSIL_CURL_CACHE_SIZE": str(CURL_CACHE_BYTES),
    "GDAL_HTTP_MAX_RETRY": str(HTTP_RETRIES),
    "GDAL_HTTP_RETRY_DELAY": str(HTTP_RETRY_DELAY_S),
    "GDAL_HTTP_MULTIPLEX": "YES",  # HTTP/2 where the server speaks it: parallel ranges over one connection
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_CONNECTTIMEOUT": str(CONNECT_TIMEOUT_S),
    "GDAL_HTTP_TIMEOUT": "60",
    "VSI_CACHE": "FALSE",  # the curl cache above and the (bounded, per read) block cache are enough
}
"""GDAL options every run sets for reads over HTTP; the block cache (GDAL_CACHEMAX) is capped per read by
:mod:`geoseg_batch.infer.segment`."""


AWS_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                   "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_REGION",
                   "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_EC2_METADATA_DISABLED",
                   "AWS_NO_SIGN_REQUEST", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CA_BUNDLE")
"""The environment variables of the standard AWS chain that GDAL and botocore read."""


def local_worker_environment() -> dict[str, str]:
    """The AWS chain's variables of this process's environment, as set now, for the embedded cluster's workers.

    Those are local processes of this user, forked from a server started with the first
    cluster: without this they would see the environment of that moment, not today's
    credentials. Handed to the local Nanny that starts them, never to a task, a graph or a
    remote worker (which reads its own environment or profile).
    """
    return {name: os.environ[name] for name in AWS_ENVIRONMENT if name in os.environ}


@dataclass(frozen=True)
class CloudSettings:
    """Where object storage answers and how requests are signed: plain data, no secrets."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for an S3-compatible server; None: AWS
    region: str | None = None
    profile: str | None = None  # a profile of ~/.aws/credentials (its keys stay there)
    anonymous: bool = False  # unsigned requests (public buckets)

    @classmethod
    def of(cls, spec: StorageSpec | None = None, environ: Mapping[str, str] | None = None) -> CloudSettings:
        """The settings of a job's ``storage:`` block, gaps filled from the AWS environment variables.

        Raises ConfigError for a block's endpoint that is not an http(s) URL (one from the environment
        is checked when it is used: a local run does not fail on it).
        """
        environ = os.environ if environ is None else environ
        endpoint = spec.endpoint_url if spec else None
        if endpoint:
            _endpoint_parts(endpoint, "storage.endpoint_url")
        endpoint = endpoint or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
        region = (spec.region if spec else None) or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        return cls(endpoint.rstrip("/") if endpoint else None, region or None,
                   (spec.profile if spec else None) or None, bool(spec.anonymous) if spec else False)

    def gdal_options(self) -> dict[str, str]:
        """GDAL's config options for reading through /vsis3/ (and the other /vsi* file systems)."""
        options = dict(GDAL_BASE)
        if self.endpoint_url:
            parts = _endpoint_parts(self.endpoint_url)
            options["AWS_S3_ENDPOINT"] = parts.netloc + parts.path
            options["AWS_HTTPS"] = "YES" if parts.scheme == "https" else "NO"
            options["AWS_VIRTUAL_HOSTING"] = "FALSE"  # path-style: bucket names need no DNS
        if self.region:
            options["AWS_REGION"] = self.region
        if self.profile:
            options["AWS_PROFILE"] = self.profile
        if self.anonymous:
            options["AWS_NO_SIGN_REQUEST"] = "YES"
        return options

    def storage_options(self, scheme: str = "s3") -> dict[str, Any]:
        """fsspec's ``storage_options`` for ``scheme`` (s3fs: endpoint, region, profile, anonymity, retries)."""
        if scheme != "s3":
            return {}
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = _endpoint_parts(self.endpoint_url).geturl()
        if self.region:
            client["region_name"] = self.region
        options: dict[str, Any] = {
            "client_kwargs": client, "anon": self.anonymous,
            "config_kwargs": {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": 60,
                              "retries": {"max_attempts": HTTP_RETRIES, "mode": "standard"}},
        }
        if self.profile:
            options["profile"] = self.profile
        return options

    def apply(self) -> None:
        """Set :meth:`gdal_options` in this process (idempotent: only options that differ are set)."""
        _apply(tuple(sorted(self.gdal_options().items())))

    def filesystem(self, scheme: str) -> Any:
        """The fsspec filesystem of ``scheme`` with these settings; a new one when the environment's
        credentials (key id, profile) changed."""
        return _filesystem(self, scheme, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))


def _endpoint_parts(endpoint: str, source: str = "storage.endpoint_url (or AWS_ENDPOINT_URL)") -> Any:
    """The parts (urllib's SplitResult) of an http(s) ``endpoint``; ConfigError naming ``source`` otherwise."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}: got {endpoint!r}; expected an http(s) URL such as http://127.0.0.1:9000 "
                          "or https://s3.example.com")
    return parts


_applied: list[tuple[tuple[str, str], ...]] = [()]  # the options this process set last


def _apply(options: tuple[tuple[str, str], ...]) -> None:
    """Set GDAL config ``options`` process-wide where GDAL's value differs (tasks call it per read: a few lookups),
    and clear the options the previous settings had that these do not.

    GDAL's own values are compared, not a record of what was set: something else in the process (a
    ``rasterio.Env`` closing, another library) may have changed or cleared them since."""
    from rasterio._env import del_gdal_config  # rasterio.env's set_gdal_config(key, None) sets the string "None"
    from rasterio.env import get_gdal_config, set_gdal_config

    for key, value in options:
        if get_gdal_config(key, normalize=False) != value:
            set_gdal_config(key, value, normalize=False)
    if _applied[0] != options:
        for key in {k for k, _ in _applied[0]} - {k for k, _ in options}:  # the previous settings' extras
            del_gdal_config(key)
        _applied[0] = options


@functools.lru_cache(maxsize=8)
def _filesystem(settings: CloudSettings, scheme: str, *credentials: str | None) -> Any:
    """An fsspec filesystem of ``scheme`` made from ``settings``, one per settings, scheme and ``credentials``
    (the environment's key id and profile, which the filesystem's session reads when it connects)."""
    import fsspec

    try:
        return fsspec.filesystem(scheme, skip_instance_cache=True, **settings.storage_options(scheme))
    except ImportError as exc:
        raise ConfigError(f"{scheme}:// URLs need fsspec's {scheme} filesystem, which is not installed: {exc}; "
                          f"install it (s3fs, gcsfs or adlfs)") from None


def object_info(url: str, settings: CloudSettings) -> dict[str, Any]:
    """fsspec's ``info()`` of the object at ``url`` (size, ETag, ...), without reading it.

    Raises MissingInputError for a missing key or bucket, ConfigError for refused credentials
    (403) and for a store that cannot be reached; each a one-line message naming ``url``.
    """
    fs = settings.filesystem(split(url)[0])
    with store_errors(url, settings):
        info = fs.info(fsspec_path(url))
    if info.get("type") == "directory":
        raise MissingInputError(f"{url}: a prefix (folder), not an object; name a file or a glob pattern")
    return info


def require_prefix(url: str, settings: CloudSettings) -> None:
    """Raise MissingInputError unless the prefix (folder) ``url`` holds objects (ConfigError: refused, unreachable)."""
    fs = settings.filesystem(split(url)[0])
    with store_errors(url, settings):
        found = fs.exists(fsspec_path(url).rstrip("/"))
    if not found:
        raise MissingInputError(f"{url}: nothing there (no object under that prefix); give a predict --out prefix "
                                "or a .zarr store that exists")


def expand(pattern: str, settings: CloudSettings) -> list[str]:
    """The URLs matching the glob ``pattern`` (``s3://bucket/incoming/*.tif``), sorted."""
    scheme = split(pattern)[0]
    fs = settings.filesystem(scheme)
    with store_errors(pattern, settings):
        return sorted(as_url(scheme, match) for match in fs.glob(fsspec_path(pattern)))


def read_text(url: str, settings: CloudSettings) -> str:
    """The text of the object at ``url`` (a scene list)."""
    fs = settings.filesystem(split(url)[0])
    with store_errors(url, settings):
        return fs.cat_file(fsspec_path(url)).decode()


@contextlib.contextmanager
def opened(url: str, settings: CloudSettings) -> Iterator[Any]:
    """A seekable binary file object of the object at ``url``, read in ranges as it is read (a zip's directory
    and one member: a few requests, not the whole object); the one-line errors of :func:`object_info`."""
    fs = settings.filesystem(split(url)[0])
    with store_errors(url, settings), fs.open(fsspec_path(url), "rb") as handle:
        yield handle


def download(url: str, settings: CloudSettings, path: Path) -> Path:
    """``path``, holding a copy of the object at ``url`` (written under a temporary name, then renamed)."""
    fs = settings.filesystem(split(url)[0])
    partial = path.with_name(f".{path.name}.partial")
    with store_errors(url, settings):
        fs.get_file(fsspec_path(url), str(partial))
    return partial.replace(path)


def object_checksum(url: str, settings: CloudSettings) -> str:
    """``"etag:<ETag>:<size>"`` of the object at ``url``: its identity from the store, no data read."""
    info = object_info(url, settings)
    etag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "").strip('"')
    if not etag:
        raise ConfigError(f"{url}: the store reports no ETag for it, which incremental runs compare")
    return f"etag:{etag}:{info.get('size')}"


@contextlib.contextmanager
def store_errors(url: str, settings: CloudSettings) -> Iterator[None]:
    """Turn fsspec/botocore errors while touching ``url`` into the one-line errors of :func:`object_info`."""
    try:
        yield
    except (ConfigError, MissingInputError):
        raise
    except Exception as exc:
        where = settings.endpoint_url or "AWS"
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, FileNotFoundError):
            kind = "bucket" if "bucket" in text.lower() else "object"
            raise MissingInputError(f"{url}: no such {kind} on {where} ({text})") from None
        if isinstance(exc, PermissionError):
            raise ConfigError(f"{url}: access denied by {where} (403: wrong or missing credentials?); check "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or storage.profile") from None
        if _unreachable(exc):
            raise ConfigError(f"{url}: the object store at {where} cannot be reached ({text}); check "
                              "storage.endpoint_url / AWS_ENDPOINT_URL and the network") from None
        raise


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the endpoint did not answer (connection refused, timeout, DNS)."""
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionRefusedError",
                         "ClientConnectorError", "ConnectionError", "ReadTimeoutError", "ServerDisconnectedError"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes and contexts."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def open_object(url: str, settings: CloudSettings, block_size: int, cache_type: str = "readahead",
                max_blocks: int = 1) -> Any:
    """A read-only fsspec file object of ``url`` whose reads fetch ``block_size`` bytes at a time through fsspec's
    ``cache_type`` cache (``blockcache``: up to ``max_blocks`` blocks, least recently used out): ranges as they
    are asked for, never the whole object.

    Raises the one-line errors of :func:`object_info` (missing key or bucket, 403, unreachable store).
    """
    fs = settings.filesystem(split(url)[0])
    options = {"maxblocks": max_blocks} if cache_type == "blockcache" else {}
    with store_errors(url, settings):
        return fs.open(fsspec_path(url), "rb", block_size=block_size, cache_type=cache_type, cache_options=options)
