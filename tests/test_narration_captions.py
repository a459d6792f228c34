"""Exact captions of narrations, end to end on the embedded voice: the captions' words are the
text's words in order, timed by forced alignment to the audio produced (chunk joins, speed)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.podcast.transcripts import parse_cues
from audiobatch.tasks.text.speakable import speakable_text
from tests.helpers.e2e import run_narrate, write_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api")]

ARTICLE = ("City council approves new bike lanes.\n\n"
           "The council voted seven to two on Tuesday to add protected bike lanes on Main Street. "
           "Work begins in the spring, and the lanes should open before the summer holidays. "
           "Shop owners asked for more parking, so the plan keeps the loading zones. "
           "Cyclists welcomed the decision, and the mayor said more streets will follow.")
RATE = 24000


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def silences(samples: np.ndarray, min_s: float = 0.3) -> list[tuple[float, float]]:
    """Exact digital silence: between chunks (stitched) and between sentences (the voice's)."""
    zero = np.concatenate([[False], samples == 0, [False]]).astype(np.int8)
    starts, ends = np.flatnonzero(np.diff(zero) == 1), np.flatnonzero(np.diff(zero) == -1)
    return [(s / RATE, e / RATE) for s, e in zip(starts, ends) if e - s >= min_s * RATE]


async def test_captions_are_the_articles_words_in_order_timed_to_the_audio(tmp_path: Path) -> None:
    rows = [{"id": "article", "text": ARTICLE, "speed": "1.0"},
            {"id": "faster", "text": ARTICLE, "speed": "1.5"}]
    # 300 audio tokens = 15 s per request: the article needs several, so captions cross joins
    run = await run_narrate(write_manifest(tmp_path / "m.csv", rows), tmp_path / "out",
                            audio_format="wav", max_audio_tokens=300, concurrency=1)
    assert run.statuses() == {"article": "ok", "faster": "ok"}
    narrations = run.dataset("narrations").set_index("item_id")
    said = words(speakable_text(ARTICLE, markdown=False))
    cues = {}
    for item_id in ("article", "faster"):
        row = narrations.loc[item_id]
        vtt, srt = Path(row["vtt_path"]), Path(row["srt_path"])
        assert vtt.read_text().startswith("WEBVTT")
        cues[item_id] = parse_cues(vtt.read_text())
        assert [(c.start_s, c.end_s, c.text) for c in parse_cues(srt.read_text())] == \
            [(c.start_s, c.end_s, c.text) for c in cues[item_id]]
        # exactly the text's words, in order: nothing misheard, nothing re-spelled
        assert [w for cue in cues[item_id] for w in words(cue.text)] == said
        starts = [c.start_s for c in cues[item_id]]
        assert starts == sorted(starts) and all(c.end_s >= c.start_s for c in cues[item_id])
        assert cues[item_id][-1].end_s <= row["duration_s"] + 0.05
    article = narrations.loc["article"]
    assert article["n_chunks"] >= 2 and article["srt_path"].endswith(".srt")

    # timed to the audio: speech starts when the first caption does, and the last one ends
    # with the speech; no caption runs across a pause between sentences or chunks, except
    # where the reading speed forces it: the voice says ~23 characters a second, so near the
    # end of the file the last words cannot all be shown at 20 a second without borrowing a
    # pause (what is left is read at nearly the limit)
    samples = decode(Path(article["audio_path"]), RATE)
    voiced = np.flatnonzero(np.abs(samples) > 0.02) / RATE
    first, last = cues["article"][0], cues["article"][-1]
    assert abs(first.start_s - voiced[0]) < 0.3 and abs(last.end_s - voiced[-1]) < 0.6
    joins = silences(samples)
    assert len(joins) >= article["n_chunks"] - 1
    spanned = 0
    for pause_start, pause_end in joins:
        for k, cue in enumerate(cues["article"]):
            if cue.start_s < pause_start - 0.1 and cue.end_s > pause_end + 0.1:
                spanned += 1
                left = len(" ".join(c.text for c in cues["article"][k:]))
                assert left / (len(samples) / RATE - cue.start_s) > 0.9 * 20, (pause_start, cue)
    assert spanned <= 1
    # at speed 1.5 the same words come 1.5 times sooner
    for normal, fast in zip(cues["article"], cues["faster"]):
        if normal.text == fast.text:
            assert fast.start_s == pytest.approx(normal.start_s / 1.5, abs=0.35)
