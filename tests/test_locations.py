"""Paths and URLs from runs started by others are compared by where they lead, never as strings
(tasks/inputs/locations.py): the "inside" checks that keep a submitted run's output root, manifest
and data roots within the operator's. The issue's examples first, then properties: whatever a
path spells (`..`, `.`, `//`, %-escapes, links), `inside` says yes only when every way of
reading it (the kernel's, urllib's, fsspec's, an object store's literal keys) stays inside.
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import fsspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiobatch.tasks.inputs.locations import CHAINED, inside, readings, scheme_of
from audiobatch.tasks.inputs.sources import fetch
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.errors import InputError

SEGMENTS = ["a", "b", "..", ".", "", "%2e%2e", "%2E.", "out", "link", "a%2fb", "%2e", "x y"]


def test_the_issues_spellings(tmp_path: Path) -> None:
    root = tmp_path / "X"
    (root / "sub").mkdir(parents=True)
    assert not inside(f"file://{root}/../escape", f"file://{root}")  # was accepted (string prefix)
    assert not inside(f"file://{root}/%2e%2e/escape", str(root))
    assert not inside(f"{root}/sub/../../escape", str(root))
    assert inside(f"file://{root}/sub", str(root)) and inside(str(root / "sub"), f"file://{root}")
    assert not inside(f"{root}x", str(root))  # a sibling with a longer name
    assert not inside("s3://bucket/out/../elsewhere", "s3://bucket/out")
    assert not inside("s3://bucket/out/%2e%2e/elsewhere", "s3://bucket/out")
    assert inside("S3://Bucket/out/run-1/", "s3://bucket/out") and not inside("s3://bucket/outer", "s3://bucket/out")
    assert not inside("s3://user:pw@bucket/out/x", "s3://bucket/out")
    assert not inside("file://other-host/etc", "/")  # a file URL naming another machine


def test_chained_and_other_protocols_are_told_apart() -> None:
    assert scheme_of("simplecache::http://127.0.0.1:8000/m.csv") == CHAINED  # was "file"
    assert scheme_of("zip://inner.csv::s3://bucket/a.zip") == CHAINED
    assert scheme_of("filecache::/etc/passwd") == CHAINED
    assert scheme_of("ftp://127.0.0.1/m.csv") == "ftp"
    assert scheme_of("/data/episode::1.wav") == "file"  # a plain path read by audiobatch, not fsspec
    assert scheme_of("http://[::ffff:127.0.0.1]:8000/a.wav") == "http"  # IPv6: httpx reads it (netguard)
    assert scheme_of("s3://[simplecache::http://127.0.0.1]/a.wav") == CHAINED  # fsspec would split it
    assert readings("simplecache::file:///data/m.csv") is None
    assert not inside("simplecache::file:///data/m.csv", "/data")


async def test_fetch_refuses_chained_urls_and_unenabled_schemes(tmp_path: Path) -> None:
    for source, said in [("simplecache::http://127.0.0.1:9/a.wav", "chained fsspec URL"),
                         ("ftp://127.0.0.1:9/a.wav", "URL scheme 'ftp' is not enabled"),
                         ("local:///etc/passwd", "URL scheme 'local' is not enabled")]:
        try:
            await fetch(source, tmp_path, FetchPolicy(), label="row 2")
        except InputError as error:
            assert said in str(error), str(error)
        else:
            raise AssertionError(f"{source} was fetched")


# --- properties ----------------------------------------------------------------------------------

def _tree(base: Path) -> Path:
    """root/ with a/, b/, a link out of it (link -> ../outside) and a sibling folder."""
    root = base / "root"
    for folder in (root / "a" / "b", root / "b", base / "outside" / "a", base / "rootx"):
        folder.mkdir(parents=True, exist_ok=True)
    if not (root / "link").is_symlink():
        (root / "link").symlink_to(base / "outside")
    return root


def _places(value: str) -> list[str]:
    """Where the readers audiobatch uses would really go: the kernel after urllib's decoding,
    and fsspec's local file system (which keeps %-escapes)."""
    if value.startswith("file:"):
        decoded = os.path.realpath(url2pathname(urlsplit(value).path))
        kept = os.path.realpath(fsspec.core.url_to_fs(value)[1])
        return [decoded, kept]
    return [os.path.realpath(value)]


def _under(place: str, root: Path) -> bool:
    real = os.path.realpath(root)
    return place == real or place.startswith(real + os.sep)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(st.sampled_from(SEGMENTS), max_size=7), as_url=st.booleans())
def test_a_local_path_is_inside_only_where_every_reader_goes_inside(tmp_path: Path, segments: list[str],
                                                                    as_url: bool) -> None:
    root = _tree(tmp_path)
    value = str(root) + "/" + "/".join(segments)
    value = f"file://{value}" if as_url else value
    if inside(value, str(root)):
        assert all(_under(place, root) for place in _places(value)), value
    if all(s in ("a", "b", "") for s in segments):  # plain names: always inside
        assert inside(value, str(root)), value


def _store_keys(url: str) -> list[str]:
    """An object store's key for a URL: taken literally (S3), or decoded and normalised (an HTTP
    front end); both must be under the root's prefix."""
    path = urlsplit(url).path.lstrip("/")
    return [path, posixpath.normpath(unquote(path))]


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(st.sampled_from(SEGMENTS), max_size=7), upper=st.booleans())
def test_a_url_is_inside_only_where_every_store_reading_is(segments: list[str], upper: bool) -> None:
    value = ("S3://BUCKET/" if upper else "s3://bucket/") + "out/" + "/".join(segments)
    if inside(value, "s3://bucket/out"):
        for key in _store_keys(value):
            assert key == "out" or key.startswith("out/"), (value, key)
    if all(s in ("a", "b") for s in segments):
        assert inside(value, "s3://bucket/out"), value


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_readings_never_raise(text: str) -> None:
    for value in (text, f"file://{text}", f"s3://b/{text}", f"{text}::{text}"):
        result = readings(value)
        assert result is None or all(isinstance(place, str) for place in result)
        inside(value, "/tmp")
