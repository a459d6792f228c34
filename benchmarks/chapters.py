"""Benchmark: chapters made offline (--chapters with the embedded model): boundary accuracy on
episodes of unrelated topics, and the time chapters add per hour of audio.

Episodes (tests/helpers/episode.py): a human reading on printing (LJ Speech, 171 s) and topic
texts narrated by the embedded voice (bees, volcanoes, sourdough, chess, marathons), joined with
0.7 s pauses and no spoken chapter cue, one of them with a sponsor read. Each is transcribed by
the `transcribe-manifest` flow with `--chapters` (the first also without: the baseline), the
cache off, in this process; then, on the transcript's own segments and words:

  - boundary accuracy: the topic changes with a chapter start within 15 s (the issue's bar),
    the mean distance of the nearest start, chapters not near any change, titles on topic;
  - the offline method alone, wall and CPU time, per hour of audio (and on a one-hour
    transcript made by repeating the episodes' segments one after another);
  - the flow's wall time with --chapters against the baseline (a ratio: the machine is shared).

Prints numbers and ratios; asserts nothing.

    .venv/bin/python benchmarks/chapters.py [--work DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from audiobatch.tasks.captions.segments import Segment  # noqa: E402
from audiobatch.tasks.captions.words import Word  # noqa: E402
from audiobatch.tasks.extract.offline import offline_notes  # noqa: E402
from tests.helpers.e2e import RunResult, read_dataset, run_transcribe, write_manifest  # noqa: E402
from tests.helpers.episode import Episode, build_episode, keywords_of  # noqa: E402

EPISODES = {
    "six topics + sponsor": ["printing", "bees", "volcanoes", "sponsor", "sourdough", "chess",
                             "marathons"],
    "same topics, other order": ["chess", "sourdough", "printing", "marathons", "bees", "volcanoes"],
}
TOLERANCE_S = 15.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def segments_of(run) -> list[Segment]:
    """The item's segments with their aligned words, as the pipeline handed them to extract."""
    words = run.dataset("words").sort_values("word_index")
    segments = []
    for row in run.dataset("segments").sort_values("segment_index").itertuples():
        inside = words[(words["start_s"] >= row.start_s - 1e-6) & (words["end_s"] <= row.end_s + 1e-6)]
        aligned = tuple(Word(w.word, w.start_s, w.end_s, w.probability) for w in inside.itertuples())
        segments.append(Segment(row.chunk_index, row.start_s, row.end_s, row.text, aligned))
    return segments


def shifted(segments: list[Segment], offset_s: float) -> list[Segment]:
    return [replace(s, start_s=s.start_s + offset_s, end_s=s.end_s + offset_s,
                    words=tuple(replace(w, start_s=w.start_s + offset_s, end_s=w.end_s + offset_s)
                                for w in s.words)) for s in segments]


def last_run(out: Path) -> RunResult:
    items = read_dataset(out, "items")
    return RunResult({"run_id": items[items["status"] == "ok"]["run_id"].max()}, out)


def accuracy(episode: Episode, notes) -> dict[str, float]:
    starts = [c.start_s for c in notes.chapters]
    changes = episode.topic_changes()
    nearest = [min(abs(change - s) for s in starts) for change in changes]
    extra = [s for s in starts[1:] if min(abs(s - c) for c in changes) > TOLERANCE_S]
    on_topic = sum(bool({w.strip(".,'").lower() for w in c.title.split()}
                        & keywords_of(episode.main_topic(c.start_s, c.end_s))) for c in notes.chapters)
    return {"changes": len(changes), "hit": sum(d <= TOLERANCE_S for d in nearest),
            "mean_s": sum(nearest) / len(nearest), "extra": len(extra),
            "chapters": len(notes.chapters), "on_topic": on_topic}


def timed_notes(segments: list[Segment], duration_s: float):
    wall, cpu = time.perf_counter(), cpu_s()
    notes = offline_notes(segments, duration_s, "en")
    return notes, time.perf_counter() - wall, cpu_s() - cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the narrated topics (kept: a re-run "
                        "reuses them); default: a temporary folder")
    parser.add_argument("--reuse", action="store_true", help="measure the offline method again on "
                        "the transcripts the last run left in --work (no flow is run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print(f"load: {os.getloadavg()[0]:.1f} (1 min average) on {os.cpu_count()} CPUs")
        all_segments, total_s = [], 0.0
        for name, parts in EPISODES.items():
            episode = build_episode(work / "episodes", parts, name=f"{len(parts)}-{parts[0]}.wav")
            rows = [{"id": "episode", "audio": str(episode.path)}]
            manifest = write_manifest(work / f"{name}.csv", rows)
            walls = {"off": 0.0}
            reuse = args.reuse and (work / f"out-{name}-auto" / "segments").is_dir()
            if reuse:
                run = last_run(work / f"out-{name}-auto")
            for chapters in () if reuse else ("off", "auto") if not all_segments else ("auto",):
                started = time.perf_counter()  # the baseline (no chapters): first episode only
                run = await run_transcribe(manifest, work / f"out-{name}-{chapters}", use_cache=False,
                                           chapters=chapters, timeout_s=1800)  # a busy machine
                walls[chapters] = time.perf_counter() - started
            segments = segments_of(run)
            notes, wall, cpu = timed_notes(segments, episode.duration_s)
            score = accuracy(episode, notes)
            print(f"\n{name}: {episode.duration_s:.0f} s; parts (start s): "
                  + ", ".join(f"{p} ({s:.0f})" for p, s in zip(parts, episode.starts_s)))
            print(f"  topic changes with a chapter start within {TOLERANCE_S:g} s: "
                  f"{score['hit']}/{score['changes']} (nearest start {score['mean_s']:.1f} s away on "
                  f"average); {score['chapters']} chapters, {score['extra']} not near a change; "
                  f"{score['on_topic']}/{score['chapters']} titles on their topic")
            for chapter in notes.chapters:
                print(f"    {chapter.start_s:7.1f} s  {chapter.title}")
            spots = [(round(s.start_s), round(s.end_s), s.sponsor) for s in notes.sponsor_spots]
            print(f"  sponsor spots (start s, end s, sponsor): {spots}")
            per_hour = 3600 / episode.duration_s
            print(f"  offline method alone: {wall:.2f} s wall, {cpu:.2f} s CPU = {wall * per_hour:.1f} s "
                  f"wall, {cpu * per_hour:.1f} s CPU per hour of audio")
            if walls["off"]:
                print(f"  flow: {walls['off']:.1f} s without chapters, {walls['auto']:.1f} s with "
                      f"(x{walls['auto'] / walls['off']:.2f}); the offline method alone is "
                      f"{wall / walls['off']:.2%} of the flow without chapters")
            all_segments += shifted(segments, total_s)
            total_s += episode.duration_s
        hour, offset = [], 0.0
        while offset < 3600:
            hour += shifted(all_segments, offset)
            offset += total_s
        notes, wall, cpu = timed_notes(hour, offset)
        print(f"\na {offset / 3600:.2f} h transcript ({len(hour)} segments, the episodes repeated): "
              f"offline method {wall:.1f} s wall, {cpu:.1f} s CPU = {wall / offset * 3600:.1f} s wall "
              f"per hour of audio; {len(notes.chapters)} chapters")


if __name__ == "__main__":
    asyncio.run(main())
