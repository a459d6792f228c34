"""Benchmark: what verifying every narrated chunk costs, and where its threshold lies.

Runs the `audiobatch narrate` command (a whole process, as a user meets it) on the three shared
texts twice in the same run, each with a fresh output root (nothing from a cache): once with
`--no-verify`, once verifying (the default). Prints

  - wall time and peak RSS of each process, and their ratios;
  - the synthesis time (the narration requests' latencies) against the time verification
    added (wall with - wall without);
  - the word error rate of every chunk as the embedded model heard it (first takes), and of the
    same chunks with one sentence taken out of what was heard (a voice that drops a sentence):
    the English threshold in tasks/narration/verify.py must lie between the two.

    .venv/bin/python benchmarks/verify.py [--max-audio-tokens 1200]
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TEXTS = Path(os.environ.get("AUDIOBATCH_TEST_DATA", ROOT.parent / "shared" / "data")) / "texts"
NAMES = ("ljspeech_LJ001.txt", "show_notes.md", "long_sentence.txt")


def run_cli(folder: Path, verify: bool, max_audio_tokens: int) -> tuple[float, float, Path]:
    """(wall s, peak RSS MB, output root) of one `audiobatch narrate` process."""
    manifest = folder / "texts.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text_file"])
        for name in NAMES:
            writer.writerow([Path(name).stem.replace("_", "-").lower(), str(TEXTS / name)])
    out = folder / ("verified" if verify else "unverified")
    command = [str(ROOT / ".venv" / "bin" / "audiobatch"), "narrate", str(manifest), "--out", str(out),
               "--format", "wav", "--no-progress", "--max-audio-tokens", str(max_audio_tokens),
               "--no-captions"]  # verification alone (captions are measured apart)
    if not verify:
        command.append("--no-verify")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status:
        raise SystemExit(f"audiobatch narrate failed (status {status}): {' '.join(command)}")
    return wall, usage.ru_maxrss / 1024, out


def without_one_sentence(heard: str) -> str:
    """What was heard with its shortest sentence of 5+ words taken out."""
    sentences = re.split(r"(?<=[.!?])\s+", heard.strip())
    candidates = [s for s in sentences if len(s.split()) >= 5]
    if len(sentences) < 2 or not candidates:
        return heard
    dropped = min(candidates, key=lambda s: len(s.split()))
    return " ".join(s for s in sentences if s is not dropped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-audio-tokens", type=int, default=1200,
                        help="per-request budget: smaller chunks give more of them to measure")
    args = parser.parse_args()
    from audiobatch.tasks.narration.verify import MAX_GAP, THRESHOLDS, check

    with tempfile.TemporaryDirectory(prefix="audiobatch-bench-verify-") as work:
        folder = Path(work)
        off_wall, off_rss, off = run_cli(folder, False, args.max_audio_tokens)
        on_wall, on_rss, on = run_cli(folder, True, args.max_audio_tokens)
        costs = pd.read_parquet(off / "costs")
        checks = pd.read_parquet(on / "narration_checks")
        narrations = pd.read_parquet(on / "narrations")
        chunk_texts = {}  # the texts each chunk said: re-plan them as the run did
        from audiobatch.tasks.text.chapters import Book, Chapter
        from audiobatch.tasks.narration.narrate import plan_chunks
        from audiobatch.tasks.model.profiles import get_profile
        from audiobatch.tasks.text.speakable import max_words_per_request, speakable_text

        profile = get_profile("audiobatch-local")
        words = max_words_per_request(args.max_audio_tokens, profile.output_audio_tokens_per_s,
                                      profile.words_per_minute)
        for name in NAMES:
            item_id = Path(name).stem.replace("_", "-").lower()
            text = speakable_text((TEXTS / name).read_text(encoding="utf-8"), markdown=name.endswith(".md"))
            for chunk in plan_chunks(Book(chapters=[Chapter(item_id, text)]), words):
                chunk_texts[(item_id, chunk.index)] = chunk.text

    synthesis_s = float(costs["latency_s"].sum())
    speech_s = float(narrations["duration_s"].sum())
    print(f"{len(NAMES)} texts, {speech_s / 60:.1f} min of speech, {len(chunk_texts)} chunks "
          f"(--max-audio-tokens {args.max_audio_tokens}); load average {os.getloadavg()[0]:.2f}")
    print(f"  audiobatch narrate --no-verify : {off_wall:7.1f} s wall, peak RSS {off_rss:6.0f} MB")
    print(f"  audiobatch narrate (verified)  : {on_wall:7.1f} s wall, peak RSS {on_rss:6.0f} MB")
    print(f"  verified / unverified          : {on_wall / off_wall:.2f}x wall, {on_rss / off_rss:.2f}x RSS")
    print(f"  synthesis (request latencies)  : {synthesis_s:7.1f} s; verification added "
          f"{on_wall - off_wall:.1f} s = {(on_wall - off_wall) / synthesis_s:.2f}x the synthesis time")
    first = checks[checks["attempt"] == 1]
    print(f"  takes: {len(checks)} checks for {len(first)} chunks, "
          f"{int((~checks['passed']).sum())} failed, flagged chunks: "
          f"{sum(len(flags) for flags in narrations['qa_flags'])}")
    clean, dropped, gaps, dropped_gaps = [], [], [], []
    for row in first.itertuples():
        reference = chunk_texts[(row.item_id, row.chunk_index)]
        heard = check(reference, row.heard, "en")
        clean.append(heard.wer)
        gaps.append(heard.gap)
        shorter = without_one_sentence(row.heard)
        if shorter != row.heard:
            missing = check(reference, shorter, "en")
            dropped.append(missing.wer)
            dropped_gaps.append(missing.gap)
    clean.sort()
    dropped.sort()
    print(f"  chunk WER as heard      : median {clean[len(clean) // 2]:.1%}, worst {clean[-1]:.1%} "
          f"(all: {', '.join(f'{w:.0%}' for w in clean)})")
    print(f"  one sentence left out   : lowest {dropped[0]:.1%}, median {dropped[len(dropped) // 2]:.1%} "
          f"over {len(dropped)} chunks")
    print(f"  longest run of words not heard: clean chunks at most {max(gaps)} "
          f"({sorted(gaps)}); one sentence left out: at least {min(dropped_gaps)}")
    print(f"  thresholds (tasks/narration/verify.py, en): {THRESHOLDS['en']:.0%} WER, a gap of {MAX_GAP} words")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
