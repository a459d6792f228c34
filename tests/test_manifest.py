"""Manifests -> Items: tolerances, row errors, whole-file errors, ids, Parquet and fsspec."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from audiobatch.tasks.inputs.manifest import (NARRATE, TRANSCRIBE, Item, ManifestError, manifest_base_dir,
                                              read_manifest)
from tests.helpers.data import SPEECH, TEXTS

REPO = Path(__file__).resolve().parents[1]




def write(tmp_path: Path, content: str | bytes, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def by_id(items: list[Item]) -> dict[str, Item]:
    return {item.item_id: item for item in items}


# --- tolerances ----------------------------------------------------------------------------

def test_bom_crlf_header_case_spaces_and_blank_lines(tmp_path: Path) -> None:
    content = "\ufeff Audio , ID ,Language\r\n\r\n a.wav , one , EN \r\n\r\n,,\r\nsub/b.flac,two,\r\n"
    items = read_manifest(write(tmp_path, content), TRANSCRIBE)
    assert [(i.row, i.item_id, i.error) for i in items] == [(3, "one", None), (6, "two", None)]
    assert items[0].source == str(tmp_path / "a.wav")
    assert items[0].options == {"language": "en"}
    assert items[1].source == str(tmp_path / "sub" / "b.flac")
    assert items[1].options == {}  # blank cells are absent keys


@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_separators(tmp_path: Path, sep: str) -> None:
    content = sep.join(["id", "text", "speed"]) + "\n" + sep.join(["a", "Hello, world.", "1,5"]) + "\n"
    [item] = read_manifest(write(tmp_path, content), NARRATE)
    assert item.error is None
    assert item.options["text"] == "Hello, world."
    assert item.options["speed"] == 1.5  # a decimal comma from a European spreadsheet


def test_quoted_fields_with_commas_quotes_and_newlines_keep_row_numbers(tmp_path: Path) -> None:
    content = ('id,text\n'
               'a,"First line, with a comma.\nSecond line with ""quotes""."\n'
               'b, "Spaced, quoted"\n'
               'c,\n')
    items = read_manifest(write(tmp_path, content), NARRATE)
    assert items[0].options["text"] == 'First line, with a comma.\nSecond line with "quotes".'
    assert items[1].options["text"] == "Spaced, quoted"
    assert (items[1].row, items[2].row) == (4, 5)  # line numbers after a two-line cell
    assert items[2].error and items[2].error.startswith("row 5:")


def test_unicode_and_spaces_in_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "Spoken Wörds"
    folder.mkdir()
    audio = folder / "Ünïcode talk 01.flac"
    audio.write_bytes((SPEECH / "openai-whisper__jfk.flac").read_bytes())
    notes = folder / "日本語 メモ.md"
    notes.write_text("# Title\n\nSome words.\n", encoding="utf-8")
    [t] = read_manifest(write(folder, "audio\nÜnïcode talk 01.flac\n", "episodes ü.csv"), TRANSCRIBE)
    assert (t.source, t.item_id, t.error) == (str(audio), "Ünïcode-talk-01", None)
    assert Path(t.source).is_file()
    [n] = read_manifest(write(folder, "text_file\n日本語 メモ.md\n", "n.csv"), NARRATE)
    assert (n.source, n.item_id, n.error, n.options["markdown"]) == (str(notes), "日本語-メモ", None, True)


def test_unknown_columns_become_metadata_and_extra_cells_fail_the_row(tmp_path: Path) -> None:
    content = "audio,Show,Guest Name\nx.wav,Build Log,Maya\ny.wav,Build Log,Sam, Jr.\n"
    x, y = read_manifest(write(tmp_path, content), TRANSCRIBE)
    assert x.metadata == {"Show": "Build Log", "Guest Name": "Maya"} and x.error is None
    assert y.error == ("row 3: the row has 4 cells but the header names 3: quote cells that "
                       "contain the separator.")


def test_trailing_separators_from_spreadsheets_are_ignored(tmp_path: Path) -> None:
    [item] = read_manifest(write(tmp_path, "audio,show,,\nx.wav,Build Log,,\n"), TRANSCRIBE)
    assert (item.metadata, item.error) == ({"show": "Build Log"}, None)


def test_sources_urls_are_kept_and_file_urls_become_paths(tmp_path: Path) -> None:
    content = ("audio\nhttps://example.com/ep%201.mp3?x=1\ns3://bucket/show/ep2.m4a\n"
               f"file://{tmp_path}/ep3.wav\n~/ep4.wav\n")
    items = read_manifest(write(tmp_path, content), TRANSCRIBE)
    assert [i.source for i in items] == ["https://example.com/ep%201.mp3?x=1",
                                         "s3://bucket/show/ep2.m4a", f"{tmp_path}/ep3.wav",
                                         str(Path("~/ep4.wav").expanduser())]
    assert [i.item_id for i in items] == ["ep-1", "ep2", "ep3", "ep4"]


# --- row errors: transcription -------------------------------------------------------------

def test_missing_audio_cell_fails_that_row_only(tmp_path: Path) -> None:
    content = "id,audio,language\na,,en\nb,b.wav,en\n"
    a, b = read_manifest(write(tmp_path, content), TRANSCRIBE)
    assert a.error == "row 2: the 'audio' cell is empty: give a file path or URL."
    assert b.error is None


@pytest.mark.parametrize("language,expected", [("en", "en"), ("DE", "de"), ("en-US", "en"), ("pt_BR", "pt")])
def test_language_codes_accepted(tmp_path: Path, language: str, expected: str) -> None:
    [item] = read_manifest(write(tmp_path, f"audio,language\na.wav,{language}\n"), TRANSCRIBE)
    assert item.options["language"] == expected and item.error is None


@pytest.mark.parametrize("language", ["english", "eng", "e", "12"])
def test_bad_language_fails_the_row(tmp_path: Path, language: str) -> None:
    [item] = read_manifest(write(tmp_path, f"audio,language\na.wav,{language}\n"), TRANSCRIBE)
    assert item.error == (f"row 2: language '{language}' is not a two-letter ISO 639-1 code: "
                          "write e.g. 'en' or 'de'.")


def test_prompt_and_model_are_options(tmp_path: Path) -> None:
    [item] = read_manifest(write(tmp_path, 'audio,prompt,model\na.wav,"Names: Dashwood, Norland",gpt-audio-1.5\n'),
                           TRANSCRIBE)
    assert item.options == {"prompt": "Names: Dashwood, Norland", "model": "gpt-audio-1.5"}


def test_the_chapters_column_takes_yes_no_or_a_method(tmp_path: Path) -> None:
    content = "audio,id,chapters\na.wav,a,yes\nb.wav,b,Off\nc.wav,c,offline\nd.wav,d,auto\ne.wav,e,\nf.wav,f,maybe\n"
    items = by_id(read_manifest(write(tmp_path, content), TRANSCRIBE))
    assert [items[i].options.get("chapters") for i in "abcde"] == ["auto", "off", "offline", "auto", None]
    assert "chapters 'maybe' is not yes/no, auto or offline" in items["f"].error


# --- row errors: narration -----------------------------------------------------------------

def test_narration_text_file_and_inline_text(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Plain words.")
    content = ("id,text,text_file,voice,format,speed,instructions,title,model\n"
               "a,Hello there.,,alloy,MP3,0.75,calm,Greeting,gpt-audio-1.5\n"
               f"b,,{TEXTS / 'show_notes.md'},,,,,,\n"
               "c,,notes.txt,,,,,,\n")
    a, b, c = read_manifest(write(tmp_path, content), NARRATE)
    assert a.source == "inline" and a.error is None
    assert a.options == {"text": "Hello there.", "markdown": False, "voice": "alloy", "format": "mp3",
                         "speed": 0.75, "instructions": "calm", "title": "Greeting", "model": "gpt-audio-1.5"}
    assert (b.source, b.options, b.error) == (str(TEXTS / "show_notes.md"), {"markdown": True}, None)
    assert (c.source, c.options, c.error) == (str(tmp_path / "notes.txt"), {"markdown": False}, None)


@pytest.mark.parametrize("text,text_file,reason", [
    ("Hi.", "notes.txt", "both 'text' and 'text_file' are filled in: keep only one"),
    ("", "", "no text: fill in 'text' or 'text_file'"),
    ('"   \n  "', "", "no text: fill in 'text' or 'text_file'"),
    ("", "missing.md", "text_file 'missing.md' not found"),
    ("", "notes.docx", "text_file 'notes.docx' must be a .txt, .md or .epub file"),
])
def test_narration_text_row_errors(tmp_path: Path, text: str, text_file: str, reason: str) -> None:
    (tmp_path / "notes.txt").write_text("Plain words.")
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    [item] = read_manifest(write(tmp_path, f"id,text,text_file\nx,{text},{text_file}\n"), NARRATE)
    assert item.error is not None and item.error.startswith(f"row 2: {reason}")
    assert item.item_id == "x"


@pytest.mark.parametrize("speed,reason", [
    ("5", "speed 5 is outside the range 0.25 to 4.0"),
    ("0.1", "speed 0.1 is outside the range 0.25 to 4.0"),
    ("nan", "speed nan is outside the range 0.25 to 4.0"),
    ("1.5x", "speed '1.5x' is not a number: write e.g. 1.25 (from 0.25 to 4.0)"),
])
def test_bad_speed_names_the_range(tmp_path: Path, speed: str, reason: str) -> None:
    [item] = read_manifest(write(tmp_path, f"text,speed\nHi.,{speed}\n"), NARRATE)
    assert item.error == f"row 2: {reason}."


def test_bad_format_and_several_problems_in_one_row(tmp_path: Path) -> None:
    [item] = read_manifest(write(tmp_path, "text,format,speed\nHi.,aac,9\n"), NARRATE)
    assert item.error == ("row 2: format 'aac' is not supported: use one of wav, mp3, flac, opus, m4b; "
                          "speed 9 is outside the range 0.25 to 4.0.")


# --- whole-manifest errors -----------------------------------------------------------------

def test_missing_manifest_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest .*nope\.csv not found: check the path"):
        read_manifest(tmp_path / "nope.csv", TRANSCRIBE)
    with pytest.raises(ManifestError, match="is a folder"):
        read_manifest(tmp_path, TRANSCRIBE)


def test_binary_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not UTF-8 text: save it as 'CSV UTF-8'"):
        read_manifest(SPEECH / "openai-whisper__jfk.flac", TRANSCRIBE)
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(write(tmp_path, "audio\ncaf\xe9.wav\n".encode("latin-1")), TRANSCRIBE)
    with pytest.raises(ManifestError, match="looks binary"):
        read_manifest(write(tmp_path, b"audio\x00\x01\n"), TRANSCRIBE)


def test_no_header_and_missing_required_columns(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="has no header row"):
        read_manifest(write(tmp_path, "\r\n\n  \n"), TRANSCRIBE)
    with pytest.raises(ManifestError, match=r"has no 'audio' column \(found: 'id', 'file', 'lang'\)"):
        read_manifest(write(tmp_path, "id,file,lang\na,a.wav,en\n"), TRANSCRIBE)
    with pytest.raises(ManifestError, match=r"has no 'text' or 'text_file' column \(found: 'audio'\)"):
        read_manifest(write(tmp_path, "audio\na.wav\n"), NARRATE)
    with pytest.raises(ManifestError, match="column 'Audio' appears twice"):
        read_manifest(write(tmp_path, "audio,Audio\na.wav,b.wav\n"), TRANSCRIBE)


def test_header_only_manifest_is_empty(tmp_path: Path) -> None:
    assert read_manifest(write(tmp_path, "id,audio\n\n"), TRANSCRIBE) == []


def test_max_rows_reads_only_the_first_rows(tmp_path: Path) -> None:
    content = "audio\n" + "".join(f"{n}.wav\n" for n in range(10))
    assert [i.item_id for i in read_manifest(write(tmp_path, content), TRANSCRIBE, max_rows=3)] == ["0", "1", "2"]


# --- ids -----------------------------------------------------------------------------------

def test_derived_ids_are_unique_and_never_take_an_explicit_id(tmp_path: Path) -> None:
    content = ("id,audio\n"
               ",a/talk.wav\n"       # derived "talk" would collide with row 5's explicit id
               ",b/talk.wav\n"
               ",c/talk.mp3\n"
               "talk,d.wav\n"
               "talk-2,e.wav\n")
    items = read_manifest(write(tmp_path, content), TRANSCRIBE)
    assert [i.item_id for i in items] == ["talk-3", "talk-4", "talk-5", "talk", "talk-2"]
    assert all(i.error is None for i in items)


def test_inline_text_ids_come_from_the_first_words(tmp_path: Path) -> None:
    content = 'text\n"Welcome back to *The Build Log*. Today, Dr. Chen joins."\nWelcome back to the build log again\n'
    items = read_manifest(write(tmp_path, content), NARRATE)
    assert [i.item_id for i in items] == ["welcome-back-to-the-build-log", "welcome-back-to-the-build-log-2"]


def test_duplicate_ids_fail_later_rows_naming_the_first(tmp_path: Path) -> None:
    content = "id,audio\nep1,a.wav\nEP1,b.wav\nep1,c.wav\nep2,d.wav\n"
    items = read_manifest(write(tmp_path, content), TRANSCRIBE)
    assert [i.error for i in items] == [
        None,
        "row 3: id 'EP1' is already used by row 2: ids must be unique (ignoring case).",
        "row 4: id 'ep1' is already used by row 2: ids must be unique (ignoring case).",
        None]
    assert [i.item_id for i in items] == ["ep1", "row-3", "row-4", "ep2"]


@pytest.mark.parametrize("bad_id,reason", [
    ("../../etc/passwd", "contains '/'"),
    ("/abs", "contains '/'"),
    ("a/b", "contains '/'"),
    ("a\\b", "contains '\\\\'"),
    ("..", "starts or ends with '.'"),
    (".hidden", "starts or ends with '.'"),
    ("bell\x07", "contains '\\x07'"),
    ("x" * 129, "id is 129 characters long; the limit is 128"),
    ("CON", "reserved device name"),
])
def test_unsafe_ids_are_refused(tmp_path: Path, bad_id: str, reason: str) -> None:
    cell = '"' + bad_id.replace('"', '""') + '"'
    items = read_manifest(write(tmp_path, f"id,audio\n{cell},a.wav\nrow-2,b.wav\n"), TRANSCRIBE)
    assert items[0].error is not None and reason in items[0].error, items[0].error
    assert items[0].item_id == "row-2-2"  # named after its line, unique even against explicit ids
    assert "/" not in items[0].item_id and items[1].item_id == "row-2"


def test_all_item_ids_are_unique_and_file_name_safe(tmp_path: Path) -> None:
    content = "id,audio\n" + "".join(f"{i},{n}.wav\n" for i, n in
                                     [("", "x"), ("x", "y"), ("", "x"), ("../x", "x"), ("x", "z"), ("", "..")])
    ids = [i.item_id for i in read_manifest(write(tmp_path, content), TRANSCRIBE)]
    assert len(set(ids)) == len(ids)
    assert all("/" not in i and not i.startswith(".") and i for i in ids), ids


# --- other containers and locations --------------------------------------------------------

def test_parquet_manifest(tmp_path: Path) -> None:
    frame = pd.DataFrame({"ID": [7, 8, 9], "Text": ["Hello.", None, "Bye."],
                          "speed": [1.5, float("nan"), 7.0], "host": ["Maya", "Sam", None]})
    path = tmp_path / "articles.parquet"
    frame.to_parquet(path)
    items = read_manifest(path, NARRATE)
    assert [(i.row, i.item_id) for i in items] == [(2, "7"), (3, "8"), (4, "9")]
    assert items[0].options == {"text": "Hello.", "markdown": False, "speed": 1.5}
    assert items[0].metadata == {"host": "Maya"} and items[2].metadata == {"host": ""}
    assert items[1].error and items[1].error.startswith("row 3: no text")
    assert items[2].error == "row 4: speed 7.0 is outside the range 0.25 to 4.0."


def test_fsspec_memory_manifest_resolves_relative_paths_against_its_folder() -> None:
    folder = f"memory://jobs-{uuid.uuid4().hex}"
    with fsspec.open(f"{folder}/notes.md", "w") as handle:
        handle.write("# Notes\n")
    with fsspec.open(f"{folder}/m.csv", "w") as handle:
        handle.write("id,text_file\nn,notes.md\nm,missing.md\n")
    assert manifest_base_dir(f"{folder}/m.csv") == folder
    n, m = read_manifest(f"{folder}/m.csv", NARRATE)
    # text files are read from disk, never fetched (nor looked for) at a URL
    assert (n.source, n.options["markdown"]) == (f"{folder}/notes.md", True)
    assert all("is not a local file" in item.error for item in (n, m))
    with fsspec.open(f"{folder}/t.csv", "w") as handle:
        handle.write("audio\nep.wav\n")
    [t] = read_manifest(f"{folder}/t.csv", TRANSCRIBE)
    assert t.source == f"{folder}/ep.wav"


def test_file_url_manifest_and_explicit_base_dir(tmp_path: Path) -> None:
    path = write(tmp_path, "audio\na.wav\n")
    [item] = read_manifest(f"file://{path}", TRANSCRIBE)
    assert item.source == str(tmp_path / "a.wav")
    [item] = read_manifest(path, TRANSCRIBE, base_dir=Path("/data/audio"))
    assert item.source == "/data/audio/a.wav"


def test_missing_fsspec_backend_is_a_manifest_error() -> None:
    # gs: its backend (gcsfs) is not installed here; s3fs is (a test dependency, and the [s3] extra)
    with pytest.raises(ManifestError, match=r"reading gs:// manifests needs an extra package .*gcsfs"):
        read_manifest("gs://bucket/m.csv", TRANSCRIBE)


def test_hundred_thousand_rows_read_quickly(tmp_path: Path) -> None:
    lines = ["id,audio,language,show"] + [f",audio/episode {n}.mp3,en,Show {n % 7}" for n in range(100_000)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    started = time.perf_counter()
    items = read_manifest(path, TRANSCRIBE)
    elapsed = time.perf_counter() - started
    print(f"\n100,000-row manifest read in {elapsed:.2f} s")
    assert len(items) == 100_000
    assert items[-1].item_id == "episode-99999" and items[-1].error is None


# --- the shipped examples ------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", [("episodes.csv", TRANSCRIBE), ("articles.csv", NARRATE)])
def test_example_manifests_parse_and_point_at_real_files(name: str, kind: str) -> None:
    items = read_manifest(REPO / "manifests" / name, kind)
    assert len(items) >= 3
    assert [i.error for i in items] == [None] * len(items)
    files = [Path(i.source) for i in items if i.source != "inline"]
    assert files and all(f.is_file() for f in files), files


def test_example_narration_is_short_enough_for_the_demo() -> None:
    items = read_manifest(REPO / "manifests" / "articles.csv", NARRATE)
    words = sum(len(i.options["text"].split()) if i.source == "inline" else len(Path(i.source).read_text().split())
                for i in items)
    assert {i.options.get("format") for i in items} >= {"mp3", "wav"}
    assert words < 300  # under about two minutes of speech at ~150 words a minute
