"""Benchmark: term recall with and without a vocabulary, on speech with rare names.

Sentences holding rare names and jargon (below) are spoken by the embedded voice (Piper
joe-medium) and heard by the embedded Whisper (tiny.en, as the `audiobatch-local` model does:
the request's text parts read by the wire contract), in three ways:

- no vocabulary;
- the vocabulary as hints (`vocabulary_instruction` in the request; the embedded model passes
  it to faster-whisper as `hotwords`, before the previous text in every 30 s window);
- the same, then the transcript's near misses corrected (tasks/transcription/vocabulary.py),
  which is what a run does with any model.

Term recall: the share of the terms said whose exact spelling (case aside) is in the
transcript. WER of the whole sentences too (Whisper's normaliser): hints must not cost the
other words. The vocabulary holds every term of the sentences plus as many distractors
(terms never said), as a real list would. Half the sentences (`HELD_OUT`) were written after
the correction thresholds were set and are reported apart.

    .venv/bin/python benchmarks/vocabulary.py
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DO_NOT_TRACK", "1")

from audiobatch.localmodel.chat import hear, prepare  # noqa: E402
from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, shared_engines  # noqa: E402
from audiobatch.localmodel.wire import parse_chat_request  # noqa: E402
from audiobatch.tasks.audio.codecs import encode, resample  # noqa: E402
from audiobatch.tasks.model.prompts import transcribe_instruction, vocabulary_instruction  # noqa: E402
from audiobatch.tasks.transcription.vocabulary import check_terms  # noqa: E402
from tests.helpers.e2e import corpus_wer  # noqa: E402

# (sentence, the terms in it)
TUNED = [
    ("Yesterday Siobhan Nakagawa presented the quarterly results to the board.", ["Siobhan", "Nakagawa"]),
    ("The contract was signed by Mister Thibodeaux in New Orleans.", ["Thibodeaux"]),
    ("Our cluster runs on Kubernetes with a PostgreSQL database behind it.", ["Kubernetes", "PostgreSQL"]),
    ("Please forward the invoice to Krzysztof before Friday.", ["Krzysztof"]),
    ("Doctor Ngozi Okonjo will chair the afternoon session.", ["Ngozi Okonjo"]),
    ("The flows are scheduled with Prefect and stored as Parquet files.", ["Prefect", "Parquet"]),
    ("Xochitl Villalobos led the expedition into the canyon.", ["Xochitl", "Villalobos"]),
    ("We met Aoife and Saoirse at the station in Galway.", ["Aoife", "Saoirse", "Galway"]),
    ("The model was converted with CTranslate2 and quantised to int8.", ["CTranslate2"]),
    ("Professor Venkataraman reviewed the thesis last spring.", ["Venkataraman"]),
    ("Grzegorz Szczepanski won the chess tournament again.", ["Grzegorz", "Szczepanski"]),
    ("The voice detector is Silero, and the speakers are found by pyannote.", ["Silero", "pyannote"]),
]
HELD_OUT = [
    ("Tenzin Dorje guided the climbers over the pass.", ["Tenzin Dorje"]),
    ("The report from Llewellyn arrived this morning.", ["Llewellyn"]),
    ("Fionnuala booked a table at the restaurant for eight.", ["Fionnuala"]),
    ("Ask Zbigniew whether the servers were patched.", ["Zbigniew"]),
    ("The photographs were taken by Eilidh MacAskill on Skye.", ["Eilidh", "MacAskill"]),
    ("Yevgeny Oyelaran joined the team from Lagos.", ["Yevgeny", "Oyelaran"]),
    ("Our designer, Dagny Haraldsdottir, drew the new logo.", ["Dagny", "Haraldsdottir"]),
    ("The package manager is Poetry, and the linter is Ruff.", ["Poetry", "Ruff"]),
    ("Nguyen Thi Huong translated the manual into three languages.", ["Nguyen Thi Huong"]),
    ("The samples were sequenced at the Wellcome Sanger Institute.", ["Wellcome Sanger"]),
    ("Ms Quenneville explained the new timetable to parents.", ["Quenneville"]),
    ("The dataset was labelled by Oluwaseun Adebayo and his team.", ["Oluwaseun Adebayo"]),
]
DISTRACTORS = ["Ingeborg", "Mbappe", "Thorvaldsen", "Kafka", "Redis", "Okafor", "Bartholomew",
               "Ljubljana", "Chiamaka", "Terraform", "Ptolemy", "Eyjafjallajokull", "Gwendolyn",
               "Nakamura", "Siddharth", "Ansible", "Rasmussen", "Quetzalcoatl", "Wojciech",
               "Honolulu", "Ekaterina", "Zaragoza", "Numpy", "Fitzwilliam", "Paraskevi",
               "Oyelowo", "Bhattacharya", "Leontyne", "Cuthbert", "Ximena"]


def recall(text: str, terms: list[str]) -> tuple[int, int]:
    found = sum(bool(re.search(rf"(?<!\w){re.escape(t.casefold())}(?!\w)", text.casefold()))
                for t in terms)
    return found, len(terms)


async def heard(samples_wav: bytes, vocabulary: tuple[str, ...]) -> str:
    """What the embedded model answers a transcription request carrying these hints."""
    import base64

    content = [{"type": "text", "text": transcribe_instruction(None, "en")}]
    if vocabulary:
        content.append({"type": "text", "text": vocabulary_instruction(vocabulary)})
    content.append({"type": "input_audio", "input_audio": {
        "data": base64.b64encode(samples_wav).decode(), "format": "wav"}})
    request = parse_chat_request(json.dumps({"model": "audiobatch-local", "modalities": ["text"],
                                             "messages": [{"role": "user", "content": content}]}).encode())
    return (await hear(await prepare(request), shared_engines())).text


async def main() -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)")
    engines = shared_engines()
    vocabulary = tuple(dict.fromkeys([t for _, ts in TUNED + HELD_OUT for t in ts] + DISTRACTORS))
    started = time.process_time()
    rows: dict[str, dict[str, list]] = {}
    for part, sentences in (("tuned", TUNED), ("held out", HELD_OUT)):
        rows[part] = {"none": [], "hints": [], "hints+fix": [], "fix only": []}
        for sentence, terms in sentences:
            speech = resample(engines.synthesize_blocking(sentence), OUTPUT_SAMPLE_RATE, 16000)
            wav = encode(speech, 16000, "wav")
            plain = await heard(wav, ())
            hinted = await heard(wav, vocabulary)
            fixed = check_terms(hinted, vocabulary).text
            fixed_only = check_terms(plain, vocabulary).text
            for mode, text in (("none", plain), ("hints", hinted), ("hints+fix", fixed),
                               ("fix only", fixed_only)):
                rows[part][mode].append((sentence, terms, text))
            print(f"  {sentence}\n    none:  {plain}\n    hints: {hinted}\n    fixed: {fixed}",
                  flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}; CPU {time.process_time() - started:.0f} s")
    print(f"vocabulary: {len(vocabulary)} terms ({len(DISTRACTORS)} never said)\n")
    print("| sentences | mode | term recall | WER |")
    print("|---|---|---|---|")
    for part, modes in rows.items():
        for mode, results in modes.items():
            found = sum(recall(text, terms)[0] for _, terms, text in results)
            total = sum(len(terms) for _, terms, _ in results)
            wer = corpus_wer([s for s, _, _ in results], [t for _, _, t in results])
            print(f"| {part} ({len(results)}) | {mode} | {found}/{total} ({found / total:.0%}) | {wer:.1%} |")


if __name__ == "__main__":
    asyncio.run(main())
