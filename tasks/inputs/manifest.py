"""Manifests (CSV or Parquet, local or any fsspec URL) -> one `Item` per row.

A whole-manifest problem (missing file, no header, no required column) raises `ManifestError`.
A bad row never raises: its Item carries `error`, a reason naming the row and what to fix, and
becomes a failed status row while the run goes on.

Known columns are matched ignoring case and surrounding spaces; any other column is kept as
item metadata. Relative paths resolve against the manifest's folder. Item ids become file
names under the output root, so they must be file-name-safe and unique (ignoring case, as on
macOS and Windows file systems); rows without an id get one derived from their source.
Reading the file itself (CSV/Parquet, local/fsspec, tolerances) lives in `manifest_io`.
"""
from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from audiobatch.tasks.audio.codecs import ENCODABLE_FORMATS
from audiobatch.tasks.inputs.ids import IdRegistry, id_problem
from audiobatch.tasks.inputs.locations import local_path
from audiobatch.tasks.inputs.manifest_io import ManifestError, read_rows
from audiobatch.tasks.inputs.sources import safe_url, scheme_of
from audiobatch.tasks.inputs.vocabulary import parse_cell
from audiobatch.tasks.options import speakers_setting

TRANSCRIBE, NARRATE = "transcribe", "narrate"
# files, not raw streams; m4b: an audiobook with chapters (tasks/narration/audiobook.py)
NARRATION_FORMATS = (*(f for f in ENCODABLE_FORMATS if f != "pcm16"), "m4b")
SPEED_MIN, SPEED_MAX = 0.25, 4.0
TEXT_FILE_SUFFIXES = (".txt", ".md", ".epub")
BaseDir = Path | str  # a local folder, or a URL prefix ("s3://bucket/dir") for remote manifests

# columns each kind understands; everything else is metadata
_OPTION_COLUMNS = {
    TRANSCRIBE: ("language", "prompt", "model", "economy", "vocabulary", "chapters", "speakers"),
    NARRATE: ("voice", "format", "speed", "instructions", "title", "model", "language"),
}
_SOURCE_COLUMNS = {TRANSCRIBE: ("audio",), NARRATE: ("text", "text_file")}
_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_LANGUAGE = re.compile(r"([A-Za-z]{2})(?:[-_][A-Za-z0-9]{2,8})?")  # "en", "en-US" -> "en"


@dataclass
class Item:
    row: int  # the row's line number in the manifest file (header = line 1), for messages
    item_id: str
    kind: str  # TRANSCRIBE | NARRATE
    source: str  # transcription: absolute audio path or URL; narration: text_file path/URL or "inline"
    # Validated, typed per-row settings; blank cells are absent keys. Narration adds
    # "text" (inline text) and "markdown" (True for a .md text_file).
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # unknown columns, as written
    error: str | None = None  # set when the row is invalid: the item fails with this reason


def manifest_base_dir(manifest: str | Path) -> BaseDir:
    """The folder that relative paths in `manifest` start from (a URL prefix for remote files)."""
    text = str(manifest)
    scheme = scheme_of(text)
    if scheme == "file":
        return local_path(text).parent
    rest = text[len(scheme) + 3:]
    return f"{scheme}://{rest.rsplit('/', 1)[0]}" if "/" in rest else f"{scheme}://"


def read_manifest(manifest: str | Path, kind: str, *, base_dir: Path | None = None,
                  max_rows: int | None = None, data: bytes | None = None) -> list[Item]:
    """Items for every non-blank row (at most `max_rows` of them), in file order; from `data`
    when the file's bytes were read already (tasks.inputs.manifest_io.read_manifest_bytes)."""
    if kind not in _SOURCE_COLUMNS:
        raise ValueError(f"unknown manifest kind {kind!r}: use {TRANSCRIBE!r} or {NARRATE!r}")
    name = safe_url(str(manifest))
    rows = read_rows(manifest, data)
    header = next((cells for _, cells in rows if any(c.strip() for c in cells)), None)
    if header is None:
        raise ManifestError(f"manifest {name} has no header row: the first line must name the "
                            f"columns, e.g. '{_SOURCE_COLUMNS[kind][0]},id'.")
    columns = _Columns.from_header(header, kind, name)
    resolve = _resolver(base_dir if base_dir is not None else manifest_base_dir(manifest))
    drafts: list[_Draft] = []
    for line, cells in rows:
        if max_rows is not None and len(drafts) >= max_rows:
            break
        if any(cell.strip() for cell in cells):  # blank lines and all-empty rows are skipped
            drafts.append(_parse_row(line, cells, columns, kind, resolve))
    return _assign_ids(drafts)


def _column_key(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", header.strip().lower())


@dataclass
class _Columns:
    known: dict[str, int]  # known column -> cell index
    metadata: list[tuple[str, int]]  # (header as written, cell index)
    width: int

    @classmethod
    def from_header(cls, header: list[str], kind: str, name: str) -> _Columns:
        allowed = {"id", *_SOURCE_COLUMNS[kind], *_OPTION_COLUMNS[kind]}
        known: dict[str, int] = {}
        metadata: list[tuple[str, int]] = []
        seen: set[str] = set()
        for index, raw in enumerate(header):
            title, key = raw.strip(), _column_key(raw)
            if not title:
                continue  # trailing separators from spreadsheets
            if key in seen:
                raise ManifestError(f"manifest {name}: column '{title}' appears twice: "
                                    "rename or remove one of them.")
            seen.add(key)
            if key in allowed:
                known[key] = index
            else:
                metadata.append((title, index))
        if not any(column in known for column in _SOURCE_COLUMNS[kind]):
            found = ", ".join(repr(h.strip()) for h in header if h.strip()) or "none"
            wanted = " or ".join(f"'{c}'" for c in _SOURCE_COLUMNS[kind])
            raise ManifestError(f"manifest {name} has no {wanted} column (found: {found}). "
                                "Name the column that holds the inputs accordingly.")
        return cls(known, metadata, len(header))


# --- rows ----------------------------------------------------------------------------------

@dataclass
class _Draft:
    item: Item
    explicit_id: str
    id_basis: str  # what a derived id is made from
    problems: list[str]


def _parse_row(line: int, cells: list[str], columns: _Columns, kind: str,
               resolve: Callable[[str], str]) -> _Draft:
    values = {key: cells[i].strip() for key, i in columns.known.items() if i < len(cells)}
    metadata = {title: cells[i].strip() if i < len(cells) else "" for title, i in columns.metadata}
    options, problems = _parse_options(values, _OPTION_COLUMNS[kind])
    if len(cells) > columns.width and any(cell.strip() for cell in cells[columns.width:]):
        problems.append(f"the row has {len(cells)} cells but the header names {columns.width}: "
                        "quote cells that contain the separator")
    source_of = _transcription_source if kind == TRANSCRIBE else _narration_source
    source, id_basis = source_of(values, resolve, options, problems)
    item = Item(line, "", kind, source, options, metadata)
    return _Draft(item, values.get("id", ""), id_basis, problems)


def _transcription_source(values: dict[str, str], resolve: Callable[[str], str],
                          options: dict[str, Any], problems: list[str]) -> tuple[str, str]:
    audio = values.get("audio", "")
    if not audio:
        problems.append("the 'audio' cell is empty: give a file path or URL")
        return "", ""
    return resolve(audio), _stem(audio)


def _narration_source(values: dict[str, str], resolve: Callable[[str], str],
                      options: dict[str, Any], problems: list[str]) -> tuple[str, str]:
    text, text_file = values.get("text", ""), values.get("text_file", "")
    if text and text_file:
        problems.append("both 'text' and 'text_file' are filled in: keep only one")
    elif not text and not text_file:
        problems.append("no text: fill in 'text' or 'text_file' (blank or whitespace-only "
                        "text cannot be narrated)")
    elif text:
        options.update(text=text, markdown=False)
        return "inline", " ".join(text.split()[:6]).lower()
    else:
        path = resolve(text_file)
        suffix = posixpath.splitext(text_file)[1].lower()
        options["markdown"] = suffix == ".md"
        if suffix not in TEXT_FILE_SUFFIXES:
            problems.append(f"text_file '{text_file}' must be a .txt, .md or .epub file (plain "
                            "text, Markdown or an EPUB book)")
        elif scheme_of(path) != "file":  # never fetched: nor looked for (a request to anywhere)
            problems.append(f"text_file '{text_file}' is not a local file ({safe_url(path)}): "
                            "text files are read from the worker's disk, not fetched; give a path")
        elif not os.path.isfile(path):
            problems.append(f"text_file '{text_file}' not found (looked for {safe_url(path)}): "
                            "paths start from the manifest's folder")
        return path, _stem(text_file)
    return "inline", ""


def _resolver(base: BaseDir) -> Callable[[str], str]:
    """A function giving the absolute path or URL of a path cell; relative paths start at `base`."""
    base_url = base.rstrip("/") if isinstance(base, str) and scheme_of(base) != "file" else None
    base_path = os.fspath(base)

    def resolve(value: str) -> str:
        if _SCHEME_PREFIX.match(value):
            return str(local_path(value)) if value[:5].lower() == "file:" else value  # URLs as written
        if value.startswith("~"):
            value = os.path.expanduser(value)
        if base_url is not None and not value.startswith("/"):
            return f"{base_url}/{posixpath.normpath(value)}"  # the manifest came from a URL
        return os.path.normpath(value if os.path.isabs(value) else base_path + os.sep + value)

    return resolve


def _stem(path_or_url: str) -> str:
    path = unquote(urlsplit(path_or_url).path) if _SCHEME_PREFIX.match(path_or_url) else path_or_url
    return posixpath.splitext(posixpath.basename(path.replace("\\", "/")))[0]


# --- per-row options: one validator per column, shared by every manifest kind ------------

def _language(raw: str) -> str:
    match = _LANGUAGE.fullmatch(raw)
    if not match:
        raise ValueError(f"language '{raw}' is not a two-letter ISO 639-1 code: write e.g. "
                         "'en' or 'de'")
    return match.group(1).lower()  # "en-US" -> "en": models take the language only


def _speed(raw: str) -> float:
    try:
        speed = float(raw.replace(",", ".") if "." not in raw else raw)  # "1,5" from a ; CSV
    except ValueError:
        raise ValueError(f"speed '{raw}' is not a number: write e.g. 1.25 (from {SPEED_MIN} "
                         f"to {SPEED_MAX})") from None
    if not SPEED_MIN <= speed <= SPEED_MAX:  # NaN fails this too
        raise ValueError(f"speed {raw} is outside the range {SPEED_MIN} to {SPEED_MAX}")
    return speed


_YES, _NO = {"true", "yes", "y", "1", "on"}, {"false", "no", "n", "0", "off"}


def _switch(raw: str) -> bool:
    word = raw.strip().lower()
    if word not in _YES | _NO:
        raise ValueError(f"economy '{raw}' is not a yes/no value: write true or false")
    return word in _YES


def _chapters(raw: str) -> str:
    """yes/no as for `economy`, or the method: `auto` (= yes) or `offline`."""
    word = raw.strip().lower()
    if word in ("auto", "offline"):
        return word
    if word not in _YES | _NO:
        raise ValueError(f"chapters '{raw}' is not yes/no, auto or offline: write e.g. true")
    return "auto" if word in _YES else "off"


def _format(raw: str) -> str:
    fmt = raw.lower().lstrip(".")
    if fmt not in NARRATION_FORMATS:
        raise ValueError(f"format '{raw}' is not supported: use one of {', '.join(NARRATION_FORMATS)}")
    return fmt


_OPTION_PARSERS: dict[str, Callable[[str], Any]] = {
    "language": _language, "speed": _speed, "format": _format, "economy": _switch,
    "chapters": _chapters,
    "prompt": str, "model": str, "voice": str, "instructions": str, "title": str,
    "vocabulary": parse_cell, "speakers": speakers_setting,
}


def _parse_options(values: dict[str, str], names: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    options: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        if raw := values.get(name):
            try:
                options[name] = _OPTION_PARSERS[name](raw)
            except ValueError as exc:
                problems.append(str(exc))
    return options, problems


# --- ids -----------------------------------------------------------------------------------

def _assign_ids(drafts: list[_Draft]) -> list[Item]:
    """Explicit ids first (the first row with an id keeps it), then derived unique ids."""
    registry = IdRegistry()
    for draft in drafts:
        explicit, row = draft.explicit_id, draft.item.row
        if not explicit:
            continue
        if problem := id_problem(explicit):
            draft.problems.append(problem)
        elif (owner := registry.claim(explicit, row)) is not None:
            draft.problems.append(f"id '{explicit}' is already used by row {owner}: ids must be "
                                  "unique (ignoring case)")
        else:
            draft.item.item_id = explicit
    for draft in drafts:
        if not draft.item.item_id:
            # a row whose own id was rejected is named after its line, not after its source
            basis = f"row-{draft.item.row}" if draft.explicit_id else draft.id_basis
            draft.item.item_id = registry.derive(basis, draft.item.row)
        if draft.problems:
            draft.item.error = f"row {draft.item.row}: " + "; ".join(draft.problems) + "."
    return [draft.item for draft in drafts]
