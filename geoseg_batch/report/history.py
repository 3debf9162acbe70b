"""A training history CSV (Keras CSVLogger style) read as one float column per name."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from geoseg_batch.errors import DataError, MissingInputError


def read_history(history_csv: Path) -> dict[str, np.ndarray]:
    """Columns of a Keras CSVLogger-style history as float arrays, sorted by epoch.

    Empty cells become NaN; when an epoch appears more than once (a resumed run that
    appended), the later row wins. Raises MissingInputError when the file does not exist,
    DataError when it is malformed.
    """
    history_csv = Path(history_csv)
    if not history_csv.is_file():
        raise MissingInputError(f"training history {history_csv}: file not found")
    with history_csv.open(newline="") as fh:
        reader = csv.reader(fh)
        header = _header(next(reader, None), history_csv)
        rows = _rows(reader, header, history_csv)
    if not rows:
        raise DataError(f"training history {history_csv}: received no epoch rows, expected at least one")
    table = _last_row_per_epoch(np.asarray(rows, dtype=float), header.index("epoch"))
    return {column: table[:, j] for j, column in enumerate(header)}


def _header(header: list[str] | None, history_csv: Path) -> list[str]:
    """The stripped column names; raises DataError without a header or without an ``epoch`` column."""
    if header is None:
        raise DataError(f"training history {history_csv}: file is empty, expected a CSV header")
    header = [column.strip() for column in header]
    if "epoch" not in header:
        raise DataError(
            f"training history {history_csv}: received columns {header}, expected an 'epoch' column"
        )
    return header


def _rows(reader: Iterable[list[str]], header: list[str], history_csv: Path) -> list[list[float]]:
    """The non-blank data rows as floats (empty cells NaN); raises DataError naming a bad line."""
    rows: list[list[float]] = []
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(
                f"training history {history_csv} line {line_no}: received {len(row)} fields, "
                f"expected {len(header)} (one per header column)"
            )
        rows.append([_cell_value(cell, column, line_no, history_csv) for column, cell in zip(header, row)])
    return rows


def _cell_value(cell: str, column: str, line_no: int, history_csv: Path) -> float:
    """One cell as a float (NaN when empty); raises DataError naming its line and column."""
    cell = cell.strip()
    try:
        return float(cell) if cell else math.nan
    except ValueError:
        raise DataError(
            f"training history {history_csv} line {line_no} column {column!r}: "
            f"received {cell!r}, expected a number"
        ) from None


def _last_row_per_epoch(table: np.ndarray, epoch_index: int) -> np.ndarray:
    """``table`` keeping the last row of each epoch, ordered by epoch."""
    last_row_of_epoch: dict[float, int] = {}
    for i, epoch in enumerate(table[:, epoch_index]):
        last_row_of_epoch[float(epoch)] = i
    keep = sorted(last_row_of_epoch.values(), key=lambda i: table[i, epoch_index])
    return table[keep]
