"""Manifest files -> (line number, cells) rows: CSV or Parquet, on disk or at an fsspec URL.

Tolerant of what spreadsheets write: a UTF-8 BOM, CRLF, `;` or tab separators, quoted cells
with separators and line breaks. Line numbers are the file's (header = line 1) so that row
errors point at the right line even after multi-line cells; Parquet records count the same way.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.inputs.local_open import read_checked
from audiobatch.tasks.inputs.locations import CHAINED, local_path, scheme_of
from audiobatch.tasks.inputs.sources import safe_url

Row = tuple[int, list[str]]


class ManifestError(InputError):
    """The manifest as a whole is unusable (missing, unreadable, no header, no required column)."""


def read_rows(manifest: str | Path, data: bytes | None = None) -> Iterator[Row]:
    """Every record of the file (or of its `data`, read before), blank ones included, as
    (line number, cells)."""
    name = safe_url(str(manifest))
    return _table_rows(read_manifest_bytes(manifest) if data is None else data, str(manifest), name)


def read_manifest_bytes(manifest: str | Path, roots: tuple[str, ...] | None = None) -> bytes:
    """The manifest file's bytes. A manifest from others (`roots` given: the data roots) is a
    local file opened as tasks/inputs/local_open.py does (not through a link, checked once open:
    regular, inside the roots); nothing of it is read otherwise."""
    text, name = str(manifest), safe_url(str(manifest))
    scheme = scheme_of(text)
    if scheme == CHAINED:
        raise ManifestError(f"manifest {name} is a chained fsspec URL (a::b): give a plain path or URL.")
    try:
        if scheme == "file" and roots is not None:
            return read_checked(local_path(text), f"manifest {name}", roots=roots)
        if scheme == "file":
            path = local_path(text)
            if path.is_dir():
                raise ManifestError(f"manifest {name} is a folder: give the CSV or Parquet file.")
            return path.read_bytes()
        with fsspec.open(text, "rb") as handle:
            return handle.read()
    except ManifestError:
        raise
    except InputError as error:  # from read_checked: what is wrong with the file, not its content
        raise ManifestError(str(error)) from None
    except FileNotFoundError:
        raise ManifestError(f"manifest {name} not found: check the path.") from None
    except ImportError as exc:  # e.g. "Install s3fs to access S3"
        raise ManifestError(f"reading {scheme}:// manifests needs an extra package ({exc}).") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"manifest {name} cannot be read ({type(exc).__name__}: "
                            f"{str(exc).replace(text, name)}).") from None


def _table_rows(data: bytes, path: str, name: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for the header and every row; Parquet rows count like CSV lines."""
    if data[:4] == b"PAR1" or path.lower().endswith(".parquet"):
        return _parquet_rows(data, name)
    try:
        text = data.decode("utf-8-sig")  # tolerates the BOM that Excel writes
    except UnicodeDecodeError:
        raise ManifestError(f"manifest {name} is not UTF-8 text: save it as 'CSV UTF-8' "
                            "or give a .parquet file.") from None
    if "\x00" in text:
        raise ManifestError(f"manifest {name} looks binary, not CSV: give a CSV or Parquet file.")
    return _csv_rows(text, name)


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, list[str]]]:
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))  # long inline texts
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text),
                        skipinitialspace=True)
    while True:
        line = reader.line_num + 1  # where the next record starts (it may span lines)
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ManifestError(f"manifest {name}, line {line}: {exc}: check the quotes.") from None
        yield line, cells


def _sniff_delimiter(text: str) -> str:
    """Comma, semicolon or tab: whichever the header line uses most (ties: comma)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] > counts[","] else ","


def _parquet_rows(data: bytes, name: str) -> Iterator[tuple[int, list[str]]]:
    import pyarrow.parquet as pq  # only Parquet manifests pay for this import

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise ManifestError(f"manifest {name} is not a readable Parquet file ({exc}).") from None
    yield 1, [str(column) for column in table.column_names]
    values = [table.column(i).to_pylist() for i in range(table.num_columns)]
    for index, cells in enumerate(zip(*values)):
        yield index + 2, [_cell_text(cell) for cell in cells]


def _cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
