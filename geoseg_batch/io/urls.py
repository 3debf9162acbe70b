"""Storage locations: a local path or an object-storage URL, and what GDAL and fsspec call them.

A location the CLI, API or a job names is a plain path (a :class:`~pathlib.Path`, the
default) or a URL of a protocol that both GDAL and fsspec read: ``s3://bucket/key``,
``gs://bucket/key``, ``az://container/key`` and ``https://host/path`` (read-only). A URL
stays a string all the way (``Path("s3://b/k")`` would fold it into ``s3:/b/k``); GDAL
opens it through its virtual file systems (``/vsis3/bucket/key``, ``/vsigs/``,
``/vsiaz/``, ``/vsicurl/https://...``), fsspec through the protocol's filesystem.
Nothing here touches the network; :mod:`geoseg_batch.io.remote` does.
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath
from typing import Union

Location = Union[Path, str]
"""A local path (Path) or an object-storage URL (str)."""

GDAL_PREFIXES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/", "http": "/vsicurl/", "https": "/vsicurl/"}
"""GDAL's virtual file system of each URL protocol."""

READ_ONLY = frozenset({"http", "https"})
"""Protocols that are read, never written."""


def protocol(value: Location | str) -> str | None:
    """The URL protocol of ``value`` ("s3", "gs", "az", "http", "https"), or None for a local path."""
    text = str(value) if isinstance(value, str) else None
    if text is None or "://" not in text:
        return None
    scheme = text.split("://", 1)[0].lower()
    return scheme if scheme in GDAL_PREFIXES else None


def is_url(value: Location | str) -> bool:
    """Whether ``value`` is an object-storage or HTTP URL (a string with a known protocol)."""
    return protocol(value) is not None


def location(value: Location | str) -> Location:
    """``value`` as a location: the URL string for a URL, else a :class:`~pathlib.Path`.

    Raises ValueError for a URL whose protocol GDAL cannot read (``ftp://...``) or that names
    no bucket or key (``s3://``, ``s3://bucket``).
    """
    text = str(value)
    if "://" in text and not is_url(text):
        scheme = text.split("://", 1)[0]
        raise ValueError(f"{text}: unsupported protocol {scheme!r}; use a local path or one of "
                         f"{', '.join(p + '://' for p in GDAL_PREFIXES)}")
    if not is_url(text):
        return Path(text)
    bucket, _, key = text.split("://", 1)[1].partition("/")
    if not bucket or not key.strip("/"):
        raise ValueError(f"{text}: a URL names a bucket (or host) and a key, e.g. s3://bucket/scenes/a.tif")
    return text


def split(url: str) -> tuple[str, str]:
    """(protocol, rest) of ``url``: ``("s3", "bucket/key")``; the rest is what fsspec's filesystem takes."""
    scheme, rest = url.split("://", 1)
    return scheme.lower(), rest


def gdal_path(value: Location) -> str:
    """The name GDAL opens ``value`` by: ``/vsis3/bucket/key`` for ``s3://bucket/key``, ``/vsicurl/https://...``
    for HTTP, the path itself for a local file."""
    scheme = protocol(value)
    if scheme is None:
        return str(value)
    if scheme in READ_ONLY:
        return GDAL_PREFIXES[scheme] + str(value)
    return GDAL_PREFIXES[scheme] + split(str(value))[1]


def fsspec_path(value: Location) -> str:
    """The name fsspec's filesystem of ``value``'s protocol takes: ``bucket/key`` (the whole URL for HTTP);
    a local path as a string."""
    scheme = protocol(value)
    if scheme is None or scheme in READ_ONLY:
        return str(value)
    return split(str(value))[1]


def as_url(scheme: str, fs_path: str) -> str:
    """The URL of ``fs_path`` (what an fsspec filesystem of ``scheme`` returns, e.g. from a glob)."""
    return fs_path if "://" in fs_path else f"{scheme}://{fs_path}"


def name(value: Location) -> str:
    """The last component of ``value``: ``a.tif`` for ``s3://bucket/scenes/a.tif`` and for ``scenes/a.tif``."""
    if is_url(value):
        return PurePosixPath(split(str(value))[1].split("?", 1)[0].rstrip("/")).name
    return Path(value).name


def stem(value: Location) -> str:
    """The last component of ``value`` without its suffix: ``a`` for ``s3://bucket/scenes/a.tif``."""
    return PurePosixPath(name(value)).stem


def sibling(base: Location, relative: str) -> Location:
    """``relative`` taken relative to the folder holding ``base`` (a scene list's line); an absolute path or a
    URL stays as it is."""
    if is_url(relative) or Path(relative).is_absolute():
        return location(relative)
    if is_url(base):
        scheme, rest = split(str(base))
        return f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), relative))}"
    return Path(base).parent / relative


def location_parts(value: Location | str) -> tuple[str, ...]:
    """``value``'s components, to compare locations: ``("s3://", "bucket", "a", "b")`` for ``s3://bucket/a/b``,
    the resolved path's parts (``("/", "home", ...)``) for a local path."""
    if is_url(value):
        scheme, rest = split(str(value))
        return (f"{scheme}://", *[part for part in posixpath.normpath("/" + rest).split("/") if part])
    return Path(value).resolve().parts


def within(inner: Location | str, outer: Location | str) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it (both local paths, or both URLs of one store)."""
    inner_parts, outer_parts = location_parts(inner), location_parts(outer)
    return inner_parts[:len(outer_parts)] == outer_parts


class ObjectPath:
    """An object-storage location used like a :class:`~pathlib.Path`: ``/`` joins keys, ``name`` and ``parent``
    as for a path; ``str()`` is the URL. Not path-like (no ``__fspath__``): code that would open it as a local
    file fails at once instead of writing to a folder named ``s3:``."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        scheme, rest = split(str(url))
        self.url = f"{scheme}://{posixpath.normpath(rest).lstrip('/')}" if rest.strip("/") else f"{scheme}://"

    def __truediv__(self, part: str) -> ObjectPath:
        return ObjectPath(f"{self.url}/{part}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __lt__(self, other: ObjectPath) -> bool:
        return self.url < other.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        """The last component of the key."""
        return posixpath.basename(self.url.split("://", 1)[1])

    @property
    def parent(self) -> ObjectPath:
        """The prefix holding this key."""
        scheme, rest = split(self.url)
        return ObjectPath(f"{scheme}://{posixpath.dirname(rest)}")

    @property
    def scheme(self) -> str:
        """The protocol: "s3", "gs", "az"."""
        return split(self.url)[0]

    @property
    def key(self) -> str:
        """``bucket/key``: what the protocol's fsspec filesystem takes."""
        return split(self.url)[1]


Output = Union[Path, ObjectPath]
"""Where results are written: a local directory, or a prefix in object storage."""


def output_location(value: Location | ObjectPath | str) -> Output:
    """``value`` as an output location: an :class:`ObjectPath` for a writable URL, else a :class:`Path`.

    Raises ValueError for a read-only protocol (https://) and for a URL naming no key.
    """
    if isinstance(value, ObjectPath):
        return value
    where = location(value)
    if isinstance(where, Path):
        return where
    if protocol(where) in READ_ONLY:
        raise ValueError(f"{where}: {protocol(where)}:// is read-only; write results to a local directory or to "
                         "object storage (s3://bucket/prefix)")
    return ObjectPath(where)
