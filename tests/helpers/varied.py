"""Episodes of varied speech joined by pauses, for measuring `--economy` on speech it was not
tuned on (benchmarks/economy.py, tests/test_e2e_economy.py).

The preset was first chosen on the shared clips as recorded and joined with room tone
(tests/helpers/pauses.py). Speech in the wild is harder: telephone lines, noisy and echoing
rooms, voices reading verse. These episodes put such speech one clip after another with a
fixed pause between clips (1.5 s, as a podcast edit would), each clip in its own condition:

- `telephone`: band-limited to 300-3,400 Hz, 8 kHz, G.711 mu-law companding, line hiss;
- `noisy room`: reverberation (an exponentially decaying synthetic room response, RT60 0.4 s)
  and babble (other speech of the corpus, reversed, 15 dB below the voice: a busy café) with
  a fan's brown-ish noise; the noise runs on under the clip's own lead-in and tail;
- `clean`: as recorded;
- `verse`: Shakespeare read by the embedded Piper voice (texts below, public domain).

Two sets of clips and verse, disjoint: `TUNING` (what economy may be tuned on) and
`HELD_OUT` (measured only after the choice); `episode(..., seed=k, shuffled=True)` makes
another episode of a set, its clips in another order (Whisper's long-form decoding loses a
whole sentence here and there, by default too: one episode is one draw). All deterministic
(seeded); the words and their order are the clips' reference texts.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode, resample
from tests.helpers.data import SPEECH
from tests.helpers.e2e import room_tone
from tests.helpers.pauses import english_references

RATE = 16_000
PAUSE_S = 1.5

# Public domain verse, as the voice reads it.
VERSE = {
    "sonnet18": (
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. "
        "Rough winds do shake the darling buds of May, and summer's lease hath all too short a "
        "date. Sometime too hot the eye of heaven shines, and often is his gold complexion "
        "dimmed; and every fair from fair sometime declines, by chance, or nature's changing "
        "course, untrimmed."),
    "antony": (
        "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise "
        "him. The evil that men do lives after them; the good is oft interred with their bones; "
        "so let it be with Caesar. The noble Brutus hath told you Caesar was ambitious: if it "
        "were so, it was a grievous fault, and grievously hath Caesar answered it."),
    "hamlet": (
        "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles "
        "and by opposing end them. To die, to sleep, no more; and by a sleep to say we end the "
        "heartache and the thousand natural shocks that flesh is heir to."),
    "macbeth": (
        "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day, to the "
        "last syllable of recorded time; and all our yesterdays have lighted fools the way to "
        "dusty death. Out, out, brief candle! Life's but a walking shadow, a poor player that "
        "struts and frets his hour upon the stage, and then is heard no more."),
}

LONG = "derived__LJ001-0009_to_0032_concat.wav"
# (source, condition): a clip file of the shared corpus, a piece of the long reading
# ("LJ:<k>", the k-th of its pieces cut at pauses), or verse ("verse:<name>").
TUNING = [
    ("pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav", "telephone"),
    ("LJ:0", "noisy room"), ("verse:sonnet18", "verse"),
    ("pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav", "noisy room"),
    ("coqui-tts__LJ001-0001.wav", "telephone"), ("LJ:1", "clean"),
    ("pocketsphinx__sense_and_sensibility_01_austen_64kb-0890.wav", "clean"),
    ("LJ:2", "telephone"), ("coqui-tts__LJ001-0003.wav", "noisy room"),
    ("verse:antony", "verse"), ("pocketsphinx__cards_001.wav", "telephone"),
    ("LJ:3", "noisy room"), ("coqui-tts__LJ001-0005.wav", "clean"),
    ("pocketsphinx__sense_and_sensibility_01_austen_64kb-0920.wav", "telephone"),
    ("LJ:4", "clean"), ("pocketsphinx__cards_003.wav", "noisy room"),
]
HELD_OUT = [
    ("openai-whisper__jfk.flac", "telephone"), ("LJ:5", "noisy room"),
    ("verse:hamlet", "verse"), ("deepspeech__LDC93S1.wav", "noisy room"),
    ("coqui-tts__LJ001-0002.wav", "telephone"), ("sphinx4__10001-90210-01803.wav", "clean"),
    ("LJ:6", "telephone"), ("pocketsphinx__goforward.wav", "noisy room"),
    ("coqui-tts__LJ001-0004.wav", "clean"), ("speech_recognition__english.wav", "telephone"),
    ("verse:macbeth", "verse"), ("LJ:7", "noisy room"),
    ("pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav", "noisy room"),
    ("coqui-tts__LJ001-0006.wav", "telephone"), ("pocketsphinx__cards_005.wav", "clean"),
    ("coqui-tts__LJ001-0007.wav", "noisy room"), ("openai-whisper__jfk.flac", "clean"),
    ("coqui-tts__LJ001-0008.wav", "telephone"), ("pocketsphinx__cards_002.wav", "noisy room"),
]
LJ_PIECES = 8  # the long reading in pieces of ~21 s
BABBLE_DB, RT60_S = 15.0, 0.4  # a busy café: the babble 15 dB below the voice


@dataclass(frozen=True)
class Episode:
    path: Path
    reference: str
    duration_s: float
    starts_s: list[float]  # where each clip's sound (lead-in included) begins
    conditions: list[str]


def telephone(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A landline: 300-3,400 Hz, 8 kHz, 8-bit mu-law, some hiss; back to 16 kHz."""
    spectrum = np.fft.rfft(samples)
    frequencies = np.fft.rfftfreq(len(samples), 1 / RATE)
    spectrum[(frequencies < 300) | (frequencies > 3400)] = 0
    narrow = resample(np.fft.irfft(spectrum, len(samples)).astype(np.float32), RATE, 8000)
    narrow = narrow / (np.max(np.abs(narrow)) + 1e-9) * 0.7 + rng.standard_normal(len(narrow)) * 3e-3
    mu = 255.0
    companded = np.sign(narrow) * np.log1p(mu * np.minimum(np.abs(narrow), 1)) / np.log1p(mu)
    quantised = np.round(companded * 127) / 127
    expanded = np.sign(quantised) * ((1 + mu) ** np.abs(quantised) - 1) / mu
    return resample(expanded.astype(np.float32), 8000, RATE)


def _babble(rng: np.random.Generator, n: int) -> np.ndarray:
    """Several voices of the long reading at random offsets, reversed (words nobody says)."""
    reading = decode(SPEECH / LONG, RATE)
    voices = [reading[o:o + n][::-1] for o in rng.integers(0, len(reading) - n, size=4)]
    return np.sum(voices, axis=0) / 2


def noisy_room(samples: np.ndarray, rng: np.random.Generator, lead_s: float = 0.4,
               babble_db: float = BABBLE_DB, rt60_s: float = RT60_S) -> np.ndarray:
    """Echo (`rt60_s`), babble `babble_db` below the voice and a fan's noise 30 dB below,
    running from `lead_s` before the voice to `lead_s` after it."""
    t = np.arange(round(rt60_s * RATE)) / RATE
    response = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60_s) * 0.3
    response[0] = 4.0  # the direct sound
    wet = np.convolve(samples, response)[:len(samples)]
    lead = round(lead_s * RATE)
    voice = np.concatenate([np.zeros(lead), wet / (np.max(np.abs(wet)) + 1e-9) * 0.5, np.zeros(lead)])
    power = float(np.mean(voice[lead:-lead] ** 2))
    babble = _babble(rng, len(voice))
    babble *= np.sqrt(power / (np.mean(babble ** 2) + 1e-12) / 10 ** (babble_db / 10))
    fan = np.cumsum(rng.standard_normal(len(voice))) * 1e-3
    fan -= np.convolve(fan, np.ones(400) / 400, mode="same")  # brown-ish, no DC drift
    fan *= np.sqrt(power / (np.mean(fan ** 2) + 1e-12) / 10 ** (30 / 10))
    return np.clip(voice + babble + fan, -1, 1).astype(np.float32)


@functools.lru_cache(maxsize=1)
def lj_pieces() -> list[tuple[np.ndarray, str]]:
    """The long reading cut into LJ_PIECES at its own pauses, each with its words: the
    reference is force-aligned to the reading by the embedded Whisper and split at the cut
    (every cut lies in a pause of at least 0.3 s, so no word straddles it)."""
    from audiobatch.localmodel.align import WhisperAligner
    from audiobatch.localmodel.engines import shared_engines
    from tests.helpers.pauses import natural_pauses

    samples = decode(SPEECH / LONG, RATE)
    words = english_references()[LONG].split()
    timed = WhisperAligner(shared_engines()).align_blocking(
        samples, words, "en")
    cuts = natural_pauses(samples, min_s=0.3)
    chosen = sorted({min(cuts, key=lambda c: abs(c - len(samples) * k / LJ_PIECES))
                     for k in range(1, LJ_PIECES)})
    bounds = list(zip([0, *chosen], [*chosen, len(samples)]))
    middles = [(w.start_s + w.end_s) / 2 * RATE for w in timed]
    return [(samples[a:b], " ".join(w for w, m in zip(words, middles) if a <= m < b))
            for a, b in bounds]


@functools.lru_cache(maxsize=None)
def _verse(name: str) -> np.ndarray:
    from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, shared_engines

    spoken = shared_engines().synthesize_blocking(VERSE[name])
    return resample(spoken, OUTPUT_SAMPLE_RATE, RATE)


def _clip(source: str, pieces: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray, str]:
    if source.startswith("LJ:"):
        return pieces[int(source[3:])]
    if source.startswith("verse:"):
        return _verse(source[6:]), VERSE[source[6:]]
    return decode(SPEECH / source, RATE), english_references()[source]


def episode(folder: Path, plan: list[tuple[str, str]], name: str, seed: int = 24,
            pause_s: float = PAUSE_S, shuffled: bool = False) -> Episode:
    """The clips of `plan` (in a seeded random order if `shuffled`), each in its condition,
    joined by `pause_s` of room tone."""
    rng = np.random.default_rng(seed)
    if shuffled:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    pieces = lj_pieces()
    audio, starts, said, position = [room_tone(rng, 1.0, RATE)], [], [], RATE
    for index, (source, condition) in enumerate(plan):
        samples, text = _clip(source, pieces)
        if condition == "telephone":
            samples = telephone(samples, rng)
        elif condition == "noisy room":
            samples = noisy_room(samples, rng)
        starts.append(position / RATE)
        audio.append(np.asarray(samples, dtype=np.float32))
        said.append(text)
        position += len(samples)
        if index < len(plan) - 1:
            audio.append(room_tone(rng, pause_s, RATE))
            position += len(audio[-1])
    audio.append(room_tone(rng, 1.0, RATE))
    joined = np.concatenate(audio)
    path = folder / f"{name}.wav"
    sf.write(path, joined, RATE, subtype="PCM_16")
    return Episode(path, " ".join(said), len(joined) / RATE, starts, [c for _, c in plan])
