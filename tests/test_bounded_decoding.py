"""Every decoder of input from others works within a budget checked on its input side (issue 23,
README "Security model"): audio before it is resampled, archives and HTTP bodies inside
decompression. The issue's examples are reproduced with the same few bytes, and measured as a
user meets them: the peak memory of a fresh process, against the same process's imports
measured in the same run. Then each decoder is fuzzed (hypothesis, a few seconds each): it
gives what the data holds, or stops with its own error, never more than its budget.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiobatch.tasks.audio import codecs
from audiobatch.tasks.bounded import STEP, BodyDecoder, Budget, Inflater, OverBudget, Undecodable, inflate
from audiobatch.tasks.errors import InputError, PermanentModelError
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.netguard import AddressPolicy
from audiobatch.tasks.inputs.sources import fetch
from audiobatch.tasks.model.client import ClientSettings, ModelClient
from audiobatch.tasks.narration.narrate import longest_reading_s
from audiobatch.tasks.text.books import read_book
from tests.helpers.bombs import bzip2_epub, flac_hours, gzip_gzip, peak_rss_mb, wav_hours
from tests.helpers.books import write_epub
from tests.helpers.faultserver import FaultServer, raw
from tests.helpers.nasty import speech

MB = 1024 * 1024
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the examples ----------------------------------------------------------------------

def test_a_735_byte_flac_of_hours_fails_its_item_before_anything_is_resampled(tmp_path: Path) -> None:
    """FLAC at 8 Hz: each 13-byte frame is 65,535 samples, 2.3 hours at 16 kHz; main took 6 GB
    resampling the first two frames of this file."""
    bomb = tmp_path / "episode.flac"
    bomb.write_bytes(flac_hours(55))
    assert bomb.stat().st_size < 800
    peak, base, said = peak_rss_mb(
        f"prepare_chunks(Path({str(bomb)!r}), Path({str(tmp_path / 'work')!r}), max_chunk_s=400, label='row 3')",
        setup="from pathlib import Path\nfrom audiobatch.tasks.audio.prepare import prepare_chunks")
    assert "OverBudget row 3: the file (757 bytes) holds more than 757 s of audio" in said
    assert peak - base < 100, f"peak {peak:.0f} MB against {base:.0f} MB for the imports alone"
    assert not list((tmp_path / "work").glob("*.wav"))  # no chunk of it was written


def test_a_narrated_reply_is_decoded_only_as_far_as_its_text_could_take(tmp_path: Path) -> None:
    """An hour of 8-bit wav at 8 Hz is 29 KB; the model was asked to say ten words."""
    reply = wav_hours(1.0)
    setup = ("from audiobatch.tasks.narration.narrate import _decode_part\n"
             "from audiobatch.tasks.run.cache import ReplyRecord\n"
             "from audiobatch.tasks.inputs.manifest import Item\n"
             "from audiobatch.tasks.model.cost import Usage\n"
             f"reply = ReplyRecord('', open({str(tmp_path / 'reply.wav')!r}, 'rb').read(), 'wav', 'm', Usage(), None)\n"
             "item = Item(row=2, item_id='ch-1', kind='narrate', source='inline')")
    (tmp_path / "reply.wav").write_bytes(reply)
    text = "Ten words of text, to say in a few seconds."
    peak, base, said = peak_rss_mb(f"_decode_part(item, 0, reply, {text!r})", setup=setup)
    limit = f"{longest_reading_s(text):.0f} s"
    assert f"the model's audio for chunk 0 is longer than {limit}, more than its 10 words take to say" in said
    assert peak - base < 100, f"peak {peak:.0f} MB against {base:.0f} MB for the imports alone"


def test_a_reply_in_another_format_than_asked_is_refused() -> None:
    from audiobatch.tasks.inputs.manifest import Item
    from audiobatch.tasks.model.cost import Usage
    from audiobatch.tasks.narration.narrate import _decode_part
    from audiobatch.tasks.run.cache import ReplyRecord

    flac = codecs.encode(speech(24000)[:24000], 24000, "flac")
    item = Item(row=2, item_id="ch-1", kind="narrate", source="inline")
    with pytest.raises(InputError, match="said to be wav, but the data opens as flac"):
        _decode_part(item, 2, ReplyRecord("", flac, "wav", "m", Usage(), None), "Hello there.")
    wav = codecs.encode(speech(24000)[:24000], 24000, "wav")
    assert _decode_part(item, 2, ReplyRecord("", wav, "wav", "m", Usage(), None), "Hello there.").size == 24000


def test_a_bzip2_epub_entry_is_inflated_no_further_than_it_states(tmp_path: Path) -> None:
    """497 bytes of bzip2 hold 632 MB; zipfile inflates a whole 4 KB read of it before cutting
    it to the stated size (main: 1.3 GB peak). Here 64 MB, measured the same way."""
    book = bzip2_epub(tmp_path / "book.epub", 64)
    assert book.stat().st_size < 3000
    peak, base, said = peak_rss_mb(f"read_book(Path({str(book)!r}), 'row 2')",
                                   setup="from pathlib import Path\nfrom audiobatch.tasks.text.books import read_book")
    assert "OverBudget row 2: 'OEBPS/chapter1.xhtml' in the EPUB unpacks to more than the 214 bytes it states" in said
    assert peak - base < 30, f"peak {peak:.0f} MB against {base:.0f} MB for the imports alone"


def test_epub_entries_of_every_zip_method_still_read(tmp_path: Path) -> None:
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        path = write_epub(tmp_path / f"book-{method}.epub", [("One", ["First words."]), ("Two", ["More."])])
        repacked = tmp_path / f"repacked-{method}.epub"
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(repacked, "w", method) as target:
            for info in source.infolist():
                target.writestr(info.filename, source.read(info))
        book = read_book(repacked, "row 1")
        assert [c.title for c in book.chapters] == ["One", "Two"], method


def gzip_gzip_reply(inflated_mb: int) -> tuple[bytes, dict[str, str]]:
    return gzip_gzip(inflated_mb), {"content-encoding": "gzip, gzip"}


async def test_stacked_content_codings_on_a_model_reply_are_refused_unread() -> None:
    """825 bytes of `gzip, gzip` are 400 MiB, decoded by httpx a network read at a time before
    any cap is checked. Here 64 MiB: refused as stacked, and a single gzip is decoded only up
    to the reply cap."""
    body, headers = gzip_gzip_reply(64)
    once = gzip.compress(bytes(8 * MB))
    with FaultServer([raw(200, body, headers), raw(200, once, {"content-encoding": "gzip"})]) as server:
        settings_ = ClientSettings(base_url=server.base_url, api_key="sk-test", max_attempts=1,
                                   max_response_mb=1)
        async with ModelClient(settings_) as client:
            with pytest.raises(PermanentModelError, match=r"2 content-codings stacked \(gzip, gzip\): refused"):
                await client.transcribe(b"RIFF" + bytes(100), "wav")
            with pytest.raises(PermanentModelError, match="over the 1 MB reply limit"):
                await client.transcribe(b"RIFF" + bytes(100), "wav")
        assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


async def test_a_model_reply_in_gzip_is_still_read() -> None:
    answer = {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "usage": {},
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello " * 1000},
                           "finish_reason": "stop"}]}
    body = gzip.compress(json.dumps(answer).encode())
    for coding, data in (("gzip", body), ("deflate", zlib.compress(json.dumps(answer).encode())),
                         ("deflate", zlib.compress(json.dumps(answer).encode())[2:-4])):
        with FaultServer([raw(200, data, {"content-encoding": coding})]) as server:
            async with ModelClient(ClientSettings(base_url=server.base_url, api_key="k", max_attempts=1)) as client:
                reply = await client.transcribe(b"RIFF" + bytes(100), "wav")
        assert reply.text == ("hello " * 1000).strip(), coding


@contextmanager
def serving(routes: dict[str, tuple[bytes, dict[str, str]]]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering each path with its (body, headers); yields its origin."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body, headers = routes[self.path]
            self.send_response(200)
            for name, value in {**headers, "content-length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


DOWNLOADS = FetchPolicy(addresses=AddressPolicy(allow_hosts=frozenset({"127.0.0.1"})), attempts=1,
                        max_bytes=2 * MB)


async def test_a_download_in_stacked_codings_is_refused(tmp_path: Path) -> None:
    body, headers = gzip_gzip_reply(64)
    with serving({"/episode.mp3": (body, {**headers, "content-type": "audio/mpeg"})}) as origin:
        with pytest.raises(InputError, match=r"ep-1: .* 2 content-codings stacked \(gzip, gzip\): refused"):
            await fetch(f"{origin}/episode.mp3", tmp_path, DOWNLOADS, label="ep-1")
    assert not list(tmp_path.glob("*.part"))


async def test_a_gzip_download_is_decoded_within_the_size_cap(tmp_path: Path) -> None:
    gzipped = {"content-encoding": "gzip", "content-type": "audio/mpeg"}
    routes = {"/big.mp3": (gzip.compress(bytes(64 * MB)), gzipped),
              "/small.mp3": (gzip.compress(b"ID3" + bytes(1000)), gzipped)}
    with serving(routes) as origin:
        with pytest.raises(InputError, match="larger than the download cap of 2,097,152 bytes"):
            await fetch(f"{origin}/big.mp3", tmp_path, DOWNLOADS, label="ep-1")
        fetched = await fetch(f"{origin}/small.mp3", tmp_path, DOWNLOADS, label="ep-2")
    assert fetched.path.read_bytes() == b"ID3" + bytes(1000)


# --- the budget mechanism ----------------------------------------------------------------------

def test_a_budget_stops_at_its_limit_with_its_own_message() -> None:
    budget = Budget(10, "row 1: too much")
    budget.charge(6)
    assert budget.left == 4
    with pytest.raises(OverBudget, match="row 1: too much"):
        budget.charge(5)
    assert isinstance(OverBudget("x"), InputError)  # an item fails with it


def test_decoding_charges_each_frame_before_it_is_resampled(monkeypatch) -> None:
    """FLAC at 800 Hz: each frame is 82 s, 1.3 M samples at 16 kHz. With a budget of three
    frames, blocks come out at most RESAMPLED_BLOCK long (upsampling x20 is done in pieces) and
    the decoder stops before the fourth frame is resampled."""
    monkeypatch.setattr(codecs, "MAX_AUDIO_S_PER_BYTE", 1e9)  # the caller's budget stops it
    frame = 65_535 * 20
    budget = Budget(3 * frame, "the caller's limit")
    sizes = []
    with pytest.raises(OverBudget, match="the caller's limit"):
        for block in codecs.iter_decoded(flac_hours(6, 800), 16000, "x", budget=budget):
            sizes.append(block.size)
    assert max(sizes) <= codecs.RESAMPLED_BLOCK
    assert 2 * frame - 1000 <= sum(sizes) <= 3 * frame  # (the resampler holds its filter's delay)


def test_the_declared_format_must_be_what_opens() -> None:
    flac = flac_hours(1, 16000)
    with pytest.raises(InputError, match="said to be mp3, but the data opens as flac"):
        codecs.decode(b"ID3\x03\x00\x00\x00\x00\x00\x00" + flac, 16000, "part 1", declared="mp3")
    mp3 = codecs.encode(speech(16000)[:16000], 16000, "mp3")
    wav = codecs.encode(speech(16000)[:16000], 16000, "wav")
    assert codecs.decode(mp3, 16000, "m", declared="mp3").size > 15000
    assert codecs.decode(wav, 16000, "w", declared="wav").size == 16000
    with pytest.raises(InputError, match="said to be wav, but the data opens as mp3"):
        codecs.decode(mp3, 16000, "m", declared="wav")


def test_real_recordings_are_far_inside_the_size_budget(tmp_path: Path) -> None:
    """The budget's bound (1 s of audio a byte) against the most compressed real audio: Opus at
    6 kbit/s, and FLAC of digital silence."""
    voice = speech(16000)
    opus = codecs.encode(voice, 16000, "opus")
    assert codecs.decode(opus, 16000, "o").size == pytest.approx(voice.size, abs=2000)
    silence = tmp_path / "silence.flac"
    sf.write(silence, np.zeros(16000 * 600, dtype=np.float32), 16000, format="FLAC")
    assert silence.stat().st_size * codecs.MAX_AUDIO_S_PER_BYTE > 10 * 600
    assert codecs.decode(silence, 16000, "s").size == 16000 * 600


def test_inflating_stops_inside_decompression() -> None:
    for kind, packed in (("gzip", gzip.compress(bytes(50 * MB))), ("bzip2", bz2.compress(bytes(50 * MB))),
                         ("zlib", zlib.compress(bytes(50 * MB)))):
        budget = Budget(MB, "over")
        inflater = Inflater(kind, budget)
        made = 0
        with pytest.raises(OverBudget):
            for piece in inflater.feed(packed):
                assert len(piece) <= STEP
                made += len(piece)
        assert made <= MB and budget.used <= MB + STEP, kind


def test_an_http_body_may_carry_one_content_coding() -> None:
    budget = Budget(MB, "over")
    for header in ("gzip, gzip", "deflate, gzip", "gzip,identity,gzip"):
        with pytest.raises(Undecodable, match="stacked"):
            BodyDecoder(header, budget, "the answer")
    with pytest.raises(Undecodable, match="content-coding 'br'"):
        BodyDecoder("br", budget, "the answer")
    for header in (None, "", "identity", "GZIP", "x-gzip", "deflate"):
        BodyDecoder(header, budget, "the answer")


# --- fuzzing: each decoder gives what the data holds, or its own error -----------------------

KINDS = {"gzip": gzip.compress, "zlib": zlib.compress, "bzip2": bz2.compress,
         "raw-deflate": lambda d: zlib.compress(d)[2:-4],
         "lzma-zip": lambda d: _zip_lzma(d)}


def _zip_lzma(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr("x", data)
    info = zipfile.ZipFile(buffer).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    return buffer.getvalue()[start:start + info.compress_size]


@FUZZ
@given(kind=st.sampled_from(sorted(KINDS)), content=st.binary(max_size=3000),
       repeat=st.integers(1, 2000), limit=st.integers(0, 200_000), cut=st.integers(0, 64))
def test_fuzz_inflate_gives_the_data_or_stops_at_the_budget(kind, content, repeat, limit, cut) -> None:
    data = content * repeat
    packed = KINDS[kind](data)
    budget = Budget(limit, "over")
    try:
        out = inflate(packed[:len(packed) - cut] if cut < len(packed) else packed, kind, budget)
    except OverBudget:
        assert len(data) > limit and budget.used <= limit + STEP
        return
    except Undecodable:
        assert cut > 0
        return
    assert out == data and len(data) <= limit


@FUZZ
@given(kind=st.sampled_from(sorted(KINDS)), junk=st.binary(max_size=2000), flips=st.lists(st.integers(0, 10**6), max_size=8))
def test_fuzz_inflate_of_damaged_data_never_passes_its_budget(kind, junk, flips) -> None:
    packed = bytearray(KINDS[kind](junk * 50) + junk)
    for flip in flips:
        packed[flip % len(packed)] ^= 0xFF
    budget = Budget(20_000, "over")
    try:
        out = inflate(bytes(packed), kind, budget)
    except (OverBudget, Undecodable):
        assert budget.used <= budget.limit + STEP
        return
    assert len(out) <= budget.limit


@FUZZ
@given(header=st.text(alphabet="gzipdeflatxbr, ", max_size=24), body=st.binary(max_size=500))
def test_fuzz_http_bodies_decode_within_the_budget_or_are_refused(header, body) -> None:
    budget = Budget(5_000, "over")
    try:
        decoder = BodyDecoder(header, budget, "the answer")
        out = b"".join(decoder.feed(body))
        decoder.finish()
    except (OverBudget, Undecodable):
        return
    assert len(out) <= 5_000


CLIP = speech(16000)[:8000]
SOUNDS = {fmt: codecs.encode(CLIP, 16000, fmt) for fmt in ("wav", "mp3", "flac", "opus")}
SOUNDS["flac-8hz"] = flac_hours(2)


@FUZZ
@given(name=st.sampled_from(sorted(SOUNDS)), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                                                             max_size=12),
       cut=st.integers(0, 2000), limit_s=st.floats(0.01, 5.0))
def test_fuzz_audio_decodes_within_its_budget_or_fails_as_input(name, flips, cut, limit_s) -> None:
    data = bytearray(SOUNDS[name])
    for position, value in flips:
        data[position % len(data)] ^= value
    data = bytes(data[:max(1, len(data) - cut)])
    budget = Budget(round(limit_s * 16000), "over")
    made = 0
    try:
        for block in codecs.iter_decoded(data, 16000, "fuzz", budget=budget,
                                         declared=name if name in codecs.DECLARED_CODECS else None):
            made += block.size
            assert block.size <= 2 * codecs.RESAMPLED_BLOCK and np.isfinite(block).all()
    except InputError:
        pass
    assert made <= budget.limit + 1024  # the resampler's flush may add its filter's delay


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**5), st.integers(1, 255)), min_size=1, max_size=6))
def test_fuzz_damaged_epubs_fail_as_input(tmp_path_factory, flips) -> None:
    folder = tmp_path_factory.mktemp("epub")
    data = bytearray(write_epub(folder / "b.epub", [("One", ["Words."]), ("Two", ["More words."])]).read_bytes())
    for position, value in flips:
        data[position % len(data)] ^= value
    damaged = folder / "damaged.epub"
    damaged.write_bytes(bytes(data))
    try:
        read_book(damaged, "row 1")
    except InputError:
        pass
