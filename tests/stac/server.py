"""A real STAC API for the tests: ``rustac serve`` (in-memory backend) on 127.0.0.1, a free port.

``rustac serve`` (rustac 0.9.18, CLI 0.2.18) answers the read side of a STAC API (landing page, conformance,
/collections, /collections/{id}/items, /search GET and POST) and has NO Transactions extension: POST, PUT and
DELETE on /collections and /collections/{id}/items answer 405. It loads collections and item collections from
the files named on its command line at start-up. So :class:`StacApi` keeps the catalogue as files (one
Collection and one ItemCollection per collection) and changes it by rewriting them and starting the server again
on the same port: what a test adds or deletes is what the next search sees, through real HTTP.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.helpers import stop_process_groups

STARTUP_S = 20.0


def rustac_command() -> str | None:
    """The ``rustac`` executable: beside this Python's (a venv's bin/), else on PATH; None when absent."""
    beside = Path(sys.executable).with_name("rustac")
    return str(beside) if beside.exists() else shutil.which("rustac")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, timeout: float = 10.0) -> Any:
    """The JSON document that a GET of ``url`` answers."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


def _extent(items: list[dict]) -> dict:
    """A Collection's extent covering ``items`` (the whole world and all time when there are none)."""
    if not items:
        return {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]}, "temporal": {"interval": [[None, None]]}}
    boxes = [item["bbox"] for item in items]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    times = sorted(item["properties"]["datetime"] for item in items)
    return {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[times[0], times[-1]]]}}


class StacApi:
    """``rustac serve`` on ``127.0.0.1:port``, its catalogue held in files under ``root``.

    ``url`` is the landing page. :meth:`add_collection`, :meth:`add_item` and :meth:`delete_item` change the
    catalogue and restart the server (about 0.3 s); :meth:`stop` ends it.
    """

    def __init__(self, root: Path, command: str) -> None:
        self.root = root
        self.command = command
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.collections: dict[str, dict] = {}
        self.items: dict[str, dict[str, dict]] = {}
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> StacApi:
        """Start the server on the catalogue as it is now and wait (bounded) until it answers; self."""
        files = [self._write(collection_id) for collection_id in self.collections]
        hrefs = [str(collection) for collection, _ in files] + [str(items) for _, items in files]
        log = (self.root / "rustac-serve.log").open("ab")
        self.process = subprocess.Popen([self.command, "serve", "--addr", f"127.0.0.1:{self.port}", *hrefs],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_until_answering()
        return self

    def stop(self) -> None:
        """Stop the server (its process group)."""
        if self.process is not None:
            stop_process_groups([self.process])
            self.process = None

    def restart(self) -> None:
        """Serve the catalogue as it is now: stop the server and start it again on the same port."""
        self.stop()
        self.start()
        self.restarts += 1

    def add_collection(self, collection_id: str, items: Iterable[dict] = (), description: str = "") -> dict:
        """Add (or replace) the collection ``collection_id`` holding ``items``; the Collection as served."""
        self.collections[collection_id] = {"description": description or f"test collection {collection_id}"}
        self.items[collection_id] = {item["id"]: self._member(item, collection_id) for item in items}
        self.restart()
        return get_json(f"{self.url}collections/{collection_id}")

    def add_item(self, collection_id: str, item: dict) -> dict:
        """Add (or replace) ``item`` in the collection ``collection_id``; the Item as served (with its links)."""
        self.items[collection_id][item["id"]] = self._member(item, collection_id)
        self.restart()
        return get_json(f"{self.url}collections/{collection_id}/items/{item['id']}")

    def delete_item(self, collection_id: str, item_id: str) -> None:
        """Delete the Item ``item_id`` of the collection ``collection_id`` (KeyError if it holds none)."""
        del self.items[collection_id][item_id]
        self.restart()

    def item_url(self, collection_id: str, item_id: str) -> str:
        """The URL that serves the Item ``item_id`` of ``collection_id``."""
        return f"{self.url}collections/{collection_id}/items/{item_id}"

    @staticmethod
    def _member(item: dict, collection_id: str) -> dict:
        """A copy of ``item`` naming ``collection_id`` as its collection, its links left to the server."""
        member = json.loads(json.dumps(item))
        member["collection"] = collection_id
        member["links"] = [link for link in member.get("links", []) if link.get("rel") not in
                           {"self", "root", "parent", "collection"}]
        return member

    def _write(self, collection_id: str) -> tuple[Path, Path]:
        """Write the Collection and the ItemCollection files of ``collection_id``; their paths."""
        items = list(self.items[collection_id].values())
        collection = {"type": "Collection", "stac_version": "1.1.0", "id": collection_id,
                      "description": self.collections[collection_id]["description"], "license": "other",
                      "extent": _extent(items), "links": []}
        collection_path = self.root / f"{collection_id}.collection.json"
        items_path = self.root / f"{collection_id}.items.json"
        collection_path.write_text(json.dumps(collection))
        items_path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        return collection_path, items_path

    def _wait_until_answering(self) -> None:
        """Return once the landing page answers; RuntimeError (with the server's log) after STARTUP_S."""
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                get_json(self.url, timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        log = (self.root / "rustac-serve.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"rustac serve did not answer on {self.url} within {STARTUP_S:.0f} s; its log:\n{log}")



def core_schema_errors(value: dict, work: Path, command: str | None = None) -> str:
    """``rustac validate``'s complaints ('' for none) about the STAC ``value`` against the CORE schemas only.

    rustac validates the core offline (its schemas are built in) but fetches each ``stac_extensions`` schema
    from the network, and with no network it fails with a bare "one or more validation errors" and no option
    to skip them; so the copy it checks has ``stac_extensions`` emptied.
    """
    core = dict(value, stac_extensions=[])
    path = work / f"validate-{value.get('id', 'value')}.json"
    path.write_text(json.dumps(core))
    done = subprocess.run([command or rustac_command() or "rustac", "validate", str(path)], capture_output=True,
                          text=True, timeout=60)
    return "" if done.returncode == 0 else (done.stdout + done.stderr).strip()
