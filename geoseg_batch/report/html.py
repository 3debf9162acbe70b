"""The HTML run report: one self-contained page per run (summary, metrics, images, config).

Images are embedded as base64 data URIs; there is no external CSS, JavaScript or image
reference, so the file can be mailed or archived alone. It is written atomically through
:func:`geoseg_batch.io.publish.atomic_path`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geoseg_batch.errors import InputError, MissingInputError
from geoseg_batch.io.publish import atomic_path

_REPORT_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { text-align: left; padding: 0.25em 0.8em; border-bottom: 1px solid #eee; vertical-align: top; }
th { font-weight: 600; color: #444; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.nested th, table.nested td { border: none; padding: 0.05em 0.6em 0.05em 0; font-size: 0.95em; }
.images { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
pre { background: #f6f8fa; padding: 0.8em 1em; overflow-x: auto; font-size: 0.9em; border-radius: 4px; }
"""

_IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def _plain(value: Any) -> Any:
    """JSON-ready data (paths and other objects as strings, numpy scalars as numbers)."""
    def default(obj: Any) -> Any:
        if hasattr(obj, "item") and not isinstance(obj, (list, tuple, dict)):
            try:
                return obj.item()
            except (TypeError, ValueError):
                pass
        if hasattr(obj, "tolist"):
            return obj.tolist()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def _format_number(value: float) -> str:
    """``value`` for a table cell: integers with thousands separators, else 4 significant digits."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1e4:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _cell(key: str, value: Any) -> tuple[str, bool]:
    """HTML for one value (escaped) and whether it is a number (right-aligned)."""
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    if isinstance(value, (int, float)):
        text = _format_number(float(value)) if isinstance(value, float) else f"{value:,}"
        if key.endswith("_bytes") and isinstance(value, (int, float)):
            from geoseg_batch.monitor import format_bytes

            text = f"{format_bytes(value)} ({text} B)"
        return html.escape(text), True
    if isinstance(value, Mapping):
        return _table(value, css="nested"), False
    if isinstance(value, (list, tuple)):
        if all(v is None or isinstance(v, (str, int, float, bool)) for v in value) and len(value) <= 12:
            return html.escape(", ".join(str(v) for v in value)) or "—", False
        return f"<pre>{html.escape(json.dumps(value, indent=2))}</pre>", False
    return html.escape(str(value)), False


def _table(rows: Mapping[str, Any], css: str = "") -> str:
    """An HTML table of ``rows`` (one ``<th>`` key and one value cell per row), or "none" when empty."""
    if not rows:
        return '<p class="meta">none</p>'
    lines = [f'<table class="{css}">' if css else "<table>"]
    for key, value in rows.items():
        cell, numeric = _cell(str(key), value)
        td = '<td class="num">' if numeric else "<td>"
        lines.append(f"<tr><th>{html.escape(str(key))}</th>{td}{cell}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    """The image at ``path`` as a base64 ``data:`` URI; raises MissingInputError or InputError (not PNG/JPEG)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"report image {path}: file not found")
    payload = path.read_bytes()
    for signature, mime in _IMAGE_TYPES:
        if payload.startswith(signature):
            return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
    raise InputError(f"report image {path}: received a file that is not PNG or JPEG, expected a PNG")


def _config_text(config: Mapping[str, Any]) -> str:
    """The resolved config as YAML text (paths as strings, keys in their given order)."""
    import yaml

    return yaml.safe_dump(_plain(dict(config)), sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=100)


def _figures(images: Sequence[tuple[str, Path]]) -> list[str]:
    """One ``<figure>`` per ``(caption, image)`` pair, every image read first (a bad one raises before any write)."""
    return [
        f'<figure><img src="{_data_uri(Path(image))}" alt="{html.escape(str(caption), quote=True)}">'
        f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
        for caption, image in images
    ]


def _head(title: str) -> list[str]:
    """The page's opening lines up to ``<body>``: charset, viewport, title and the inline CSS."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_REPORT_CSS}</style>",
        "</head>",
        "<body>",
    ]


def _sections(title: str, summary: Mapping[str, Any], metrics: Mapping[str, Any] | None,
              figures: list[str], config: Mapping[str, Any]) -> list[str]:
    """The page's body lines: heading, summary, metrics (when any), quicklooks (when any), config."""
    from geoseg_batch.version import __version__

    plain_summary = _plain(dict(summary))
    plain_metrics = _plain(dict(metrics)) if metrics else None
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">generated {generated} by geoseg_batch {html.escape(__version__)}</p>',
        '<h2 id="summary">Summary</h2>',
        _table(plain_summary),
    ]
    if plain_metrics:
        parts += ['<h2 id="metrics">Metrics</h2>', _table(plain_metrics)]
    if figures:
        parts += ['<h2 id="quicklooks">Quicklooks</h2>', '<div class="images">', *figures, "</div>"]
    parts += ['<h2 id="config">Configuration</h2>', f'<pre class="config">{html.escape(_config_text(config))}</pre>']
    return parts


def write_run_report(path: Path, title: str, summary: Mapping[str, Any], config: Mapping[str, Any],
                     images: Sequence[tuple[str, Path]], metrics: Mapping[str, Any] | None = None) -> Path:
    """One self-contained HTML page for a run; returns ``path``.

    Sections: summary table, metrics table (when given), images (``(caption, png)`` pairs,
    embedded as base64 data URIs), and the resolved config as YAML. No external CSS,
    JavaScript or image references: the file can be mailed or archived alone. Nested
    mappings become nested tables; ``*_bytes`` values are shown in binary units too.
    Written atomically (temp name beside ``path``, then rename); parents are created.

    Raises MissingInputError for an image that does not exist, InputError for one that is
    not a PNG or JPEG (before anything is written).
    """
    path = Path(path)
    figures = _figures(images)
    parts = [*_head(title), *_sections(title, summary, metrics, figures, config), "</body>", "</html>"]
    with atomic_path(path, ".html") as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
