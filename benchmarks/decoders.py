"""Benchmark: what the worst 1 KB input can cost each decoder of others' input (issue 23).

Every decoder works within a budget checked on its input side (tasks/bounded.py). For each, the
input here is the worst a kilobyte can be against that budget: it decodes to exactly as much as
the budget lets through (or more, and is stopped). Each runs in a fresh process; the figure is
its peak RSS less the peak of the same process doing only its imports, measured in the same run
(the project's rule for a busy machine).

  audio file (prepare)   a manifest's or feed's file, decoded and cut into chunks: FLAC at
                         4 kHz, 13-byte frames of 16 s; stopped at the file's own budget
                         (1 s of audio a byte)
  audio, whole           the same file decoded whole (what the in-process model does)
  serve request          `serve`'s decode of a 1 KB wav at 8 Hz, 8-bit (wav or mp3 must open
                         as declared; FLAC is refused), within --max-audio-s
  narrated reply         a 1 KB wav reply at 8 Hz for a 200-word chunk: the longest a wav of
                         that size can be, within the text's reading time
  EPUB                   a bzip2 entry honestly stating 4 MB (the most one document may state),
                         1 KB of zip in all; read until the book's text passes its limit
  HTTP body              a reply in gzip (one coding at most): 1 KB inflating to 1 MB

Prints MB per decoder, and the bound that holds it. Asserts nothing.

    .venv/bin/python benchmarks/decoders.py
"""
from __future__ import annotations

import gzip
import os
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.bombs import flac_hours, peak_rss_mb, wav_hours  # noqa: E402
from tests.helpers.books import write_epub  # noqa: E402


def inputs(folder: Path) -> dict[str, tuple[str, str, int]]:
    """name -> (setup, snippet, input bytes)."""
    audio = folder / "one-kb.flac"
    audio.write_bytes(flac_hours(76, 4000))
    wav = folder / "one-kb.wav"
    wav.write_bytes(wav_hours(1000 / 8 / 3600))
    epub = write_epub(folder / "book.epub", [("One", ["A chapter."])])
    markup = (b'<html xmlns="http://www.w3.org/1999/xhtml"><body><p>' + b"a " * (2 * 1024 * 1024 - 100)
              + b"</p></body></html>")  # just under 4 MiB: the most one document may state
    repacked = folder / "bomb.epub"
    with zipfile.ZipFile(epub) as source, zipfile.ZipFile(repacked, "w", zipfile.ZIP_BZIP2) as target:
        for info in source.infolist():
            chapter = info.filename == "OEBPS/chapter1.xhtml"
            target.writestr(info.filename, markup if chapter else source.read(info))
    body = gzip.compress(bytes(1024 * 1024), 9)
    (folder / "body.gz").write_bytes(body)
    text = " ".join(["word"] * 200)
    return {
        "audio file (prepare)": (
            "from pathlib import Path\nfrom audiobatch.tasks.audio.prepare import prepare_chunks",
            f"prepare_chunks(Path({str(audio)!r}), Path({str(folder / 'work')!r}), max_chunk_s=409.5, label='x')",
            audio.stat().st_size),
        "audio, whole": (
            "from audiobatch.tasks.audio import codecs",
            f"codecs.decode(open({str(audio)!r}, 'rb').read(), 16000, 'x')", audio.stat().st_size),
        "serve request": (
            "from audiobatch.localmodel.chat import _decode\nfrom audiobatch.localmodel.wire import AudioInput\n"
            "from audiobatch.tasks.bounded import Budget",
            f"_decode(AudioInput(open({str(wav)!r}, 'rb').read(), 'wav', 'x'), Budget(409 * 16000, ''), 409.6)",
            wav.stat().st_size),
        "narrated reply": (
            "from audiobatch.tasks.narration.narrate import _decode_part\nfrom audiobatch.tasks.run.cache import ReplyRecord\n"
            "from audiobatch.tasks.inputs.manifest import Item\nfrom audiobatch.tasks.model.cost import Usage",
            f"_decode_part(Item(row=2, item_id='x', kind='narrate', source='inline'), 0, "
            f"ReplyRecord('', open({str(wav)!r}, 'rb').read(), 'wav', 'm', Usage(), None), {text!r})",
            wav.stat().st_size),
        "EPUB": (
            "from pathlib import Path\nfrom audiobatch.tasks.text.books import read_book",
            f"read_book(Path({str(repacked)!r}), 'x')", repacked.stat().st_size),
        "HTTP body": (
            "from audiobatch.tasks.bounded import BodyDecoder, Budget",
            f"decoder = BodyDecoder('gzip', Budget(128 * 2**20, ''), 'x')\n"
            f"body = b''.join(decoder.feed(open({str(folder / 'body.gz')!r}, 'rb').read()))\n"
            "print('decoded', len(body))", len(body)),
    }


def main() -> int:
    print(f"load before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="decoders-") as tmp:
        for name, (setup, snippet, size) in inputs(Path(tmp)).items():
            peak, base, said = peak_rss_mb(snippet, setup)
            outcome = said.splitlines()[-1][:110] if said else "decoded"
            print(f"{name:22s} {size:5,} bytes in: peak +{peak - base:6.1f} MB "
                  f"({peak:.0f} MB against {base:.0f} MB for its imports); {outcome}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
