"""Where a job's work runs and where its data lives: the Dask cluster (:class:`ClusterSpec`), the object storage
of s3:// locations (:class:`StorageSpec`) and the STAC catalog scenes are found in (:class:`StacSpec`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from geoseg_batch.config.spec import Spec

SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
"""The schemes of Dask's comms (distributed.comm.registry's backends)."""


class ClusterSpec(Spec):
    """Where Dask work runs: an existing scheduler, or an embedded LocalCluster."""

    scheduler: str | None = Field(None, description="address of an existing scheduler, e.g. tcp://host:8786",
                                  json_schema_extra={"metavar": "ADDR", "exclusive": "target"})
    workers: int | None = Field(None, ge=1, description="embedded LocalCluster size (default: one per core)",
                                json_schema_extra={"metavar": "N", "exclusive": "target"})
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | None = Field(None, description="per worker, e.g. '4GiB'")
    timeout_s: float = Field(15.0, gt=0, description="how long to wait for a scheduler (connection and handshake)")
    no_worker_timeout_s: float = Field(60.0, gt=0, description="fail the run when the cluster has had no live "
                                                               "worker for this long (a re-run resumes)")
    gpus: int | None = Field(None, ge=0, description="embedded cluster: one worker per GPU (dask-cuda's "
                                                     "LocalCUDACluster, resources GPU=1); default: every visible "
                                                     "GPU when dask-cuda is installed, 0 for CPU only")
    train_workers: int | None = Field(None, ge=1, description="distributed training: workers of the cluster that "
                                                              "each run one training process (default: all)",
                                         json_schema_extra={"metavar": "N"})
    dashboard_address: str | None = Field(None, description="embedded cluster's dashboard host:port (default "
                                          "127.0.0.1:0, this machine only; ':8787' opens it to the network)")

    @field_validator("scheduler")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        """A scheduler address is [SCHEME://]HOST:PORT, SCHEME one Dask speaks (inproc:// addresses as they are)."""
        if value is None or value.startswith("inproc://"):
            return value
        scheme, _, location = value.rpartition("://")
        host, _, port = location.rpartition(":")
        reason = (f"unknown scheme {scheme!r}" if scheme and scheme not in SCHEDULER_SCHEMES else
                  "no host" if not host else None if port.isdigit() and int(port) <= 65535 else f"port {port!r}")
        if reason is not None:
            raise ValueError(f"{value!r} is not a scheduler address ({reason}); give tcp://HOST:PORT (what "
                             "`dask scheduler` prints), or drop --scheduler to use a local cluster")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ClusterSpec:
        if self.scheduler and self.workers:
            raise ValueError("give either scheduler (an existing cluster) or workers (a local one), not both")
        return self


class StorageSpec(Spec):
    """Object storage for s3:// locations: where it answers and how requests are signed.

    Holds no secrets: credentials come from the standard AWS chain (environment, profile,
    instance role) on each machine. Unset fields fall back to AWS_ENDPOINT_URL and AWS_REGION.
    """

    endpoint_url: str | None = Field(None, description="an S3-compatible endpoint, e.g. http://127.0.0.1:9000 "
                                                        "(default: AWS_ENDPOINT_URL, else AWS itself)",
                                     json_schema_extra={"metavar": "URL"})
    region: str | None = Field(None, description="the bucket's region (default: AWS_REGION)")
    profile: str | None = Field(None, description="a profile of ~/.aws/credentials to sign with")
    anonymous: bool = Field(False, description="unsigned requests, for public buckets")


class StacSpec(Spec):
    """Scenes found in a STAC catalog: a STAC API searched through pystac-client, or a static catalog,
    collection or ItemCollection file (a path or URL) whose Items are filtered the same way."""

    url: str | None = Field(None, description="a STAC API (its landing page URL) or a static catalog / collection / "
                                              "ItemCollection JSON (path or URL): scenes are its Items",
                            json_schema_extra={"name": "stac", "metavar": "URL"})
    collections: list[str] | None = Field(None, description="collection ids to search",
                                          json_schema_extra={"name": "collection", "metavar": "C,..."})
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="west, south, east, north in degrees (WGS 84)",
        json_schema_extra={"metavar": ["W", "S", "E", "N"]})
    datetime: str | None = Field(None, description="an instant or range, e.g. 2024-01-01/2024-06-30 or 2024-05-01/..",
                                 json_schema_extra={"metavar": "RANGE"})
    query: list[str] | None = Field(None, description="property filters (STAC query extension), e.g. "
                                                      "eo:cloud_cover<20", json_schema_extra={"metavar": "EXPR,..."})
    ids: list[str] | None = Field(None, description="only these Item ids", json_schema_extra={"name": "item_ids"})
    max_items: int | None = Field(None, ge=1, description="at most this many Items (a guard for broad searches)")
    assets: dict[str, str] | None = Field(None, description="the bundle's band names mapped to asset keys, e.g. "
                                                            "red=B04,green=B03 (default: matched through eo:bands "
                                                            "names and common names)",
                                          json_schema_extra={"metavar": "BAND=ASSET,..."})
    timeout_s: float = Field(30.0, gt=0, description="how long one request to the catalog may take",
                             json_schema_extra={"name": "stac_timeout_s", "metavar": "S"})

    @field_validator("assets", mode="before")
    @classmethod
    def _band_assets(cls, value: Any) -> Any:
        """``BAND=ASSET,...`` (the command line's spelling) as a mapping; a mapping as it is."""
        if not isinstance(value, str):
            return value
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if not pairs or any(not sep or not band.strip() or not asset.strip() for band, sep, asset in pairs):
            raise ValueError(f"got {value!r}; give BAND=ASSET pairs separated by commas, e.g. red=B04,green=B03")
        return {band.strip(): asset.strip() for band, _, asset in pairs}

    @model_validator(mode="after")
    def _a_catalog(self) -> StacSpec:
        if self.url is None:
            raise ValueError("stac: no url; give the STAC API or catalog to search (--stac URL)")
        return self
