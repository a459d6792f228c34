"""What a manifest will cost before anything is sent (`audiobatch estimate`).

Requests are planned the way the run will plan them (audio split by the per-request budget,
text split by words per request) and each is priced with the same expected-usage functions
that the run's budget check uses (tasks/model/estimate.py). With economy, a local file is listened
to as the run will listen (the same VAD pass, `tasks.audio.economy.shortened_seconds`), so the
forecast counts the audio the run will send; a file it cannot read counts at its duration.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from audiobatch.tasks.audio import codecs
from audiobatch.tasks.audio.economy import Economy, shortened_seconds
from audiobatch.tasks.audio.prepare import context_words_for, max_chunk_seconds
from audiobatch.tasks.errors import AudiobatchError
from audiobatch.tasks.inputs.manifest import TRANSCRIBE, Item
from audiobatch.tasks.inputs.sources import safe_url, scheme_of
from audiobatch.tasks.model.cost import Usage, cost_usd
from audiobatch.tasks.model.estimate import expected_narrate_usage, expected_transcribe_usage
from audiobatch.tasks.model.profiles import ModelProfile, Prices
from audiobatch.tasks.text.books import item_text
from audiobatch.tasks.text.speakable import max_words_per_request, split_for_narration


@dataclass
class ItemForecast:
    item_id: str
    model: str
    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0
    seconds: float = 0.0  # audio in (transcription) or expected audio out (narration)
    problem: str | None = None
    countable_later: bool = False  # not a problem: a URL whose duration is known once fetched
    recorded_s: float = 0.0  # transcription: the recording's duration (more than sent with economy)
    listened: bool = False  # economy: pauses found by the VAD (else guessed from the duration)


class NotCountable(AudiobatchError):
    """Fine to run, but its size is unknown before the run (a URL: known once downloaded)."""


def _audio_seconds(item: Item) -> float:
    if scheme_of(item.source) != "file":
        raise NotCountable(f"duration known only once downloaded ({safe_url(item.source)})")
    path = item.source.removeprefix("file://")
    if not os.path.isfile(path):
        raise AudiobatchError(f"file not found: {path}. Check the path (relative paths in a "
                              "manifest start from the manifest's folder).")
    duration = codecs.probe(path, "the file").duration_s
    if duration is None:
        raise NotCountable("the file does not state its duration")
    return duration


def _sent_seconds(item: Item, economy: Economy | None) -> tuple[float, float, bool]:
    """(recorded, sent, listened) seconds: with economy, a local file is listened to as the
    run will; elsewhere (or unreadable) only the speed-up is counted, from the duration."""
    if economy is not None and scheme_of(item.source) == "file":
        try:
            recorded, sent = shortened_seconds(item.source.removeprefix("file://"), economy,
                                               item.item_id)
            return recorded, sent, True
        except AudiobatchError:
            pass  # e.g. too damaged to listen to: fall back to the stated duration
    recorded = _audio_seconds(item)
    return recorded, recorded / (economy.speed if economy else 1.0), False


def forecast_transcription(item: Item, profile: ModelProfile, *, prompt: str | None,
                           language: str | None, economy: Economy | None = None,
                           context_words: int = 0) -> ItemForecast:
    recorded, seconds, listened = _sent_seconds(item, economy)
    max_s = max_chunk_seconds(profile.max_input_audio_tokens, profile.input_audio_tokens_per_s)
    requests = max(1, math.ceil(seconds / max_s))
    context_words = context_words_for(context_words, max_s)
    usage = Usage()
    words_per_request = seconds / requests * profile.speech_words_per_minute / 60.0
    for index in range(requests):  # every request after the first carries context
        context = round(min(context_words, words_per_request)) if index else 0
        usage = usage + expected_transcribe_usage(seconds / requests, profile, prompt, language,
                                                  context_words=context)
    return ItemForecast(item.item_id, profile.model, requests, usage, seconds=seconds,
                        recorded_s=recorded, listened=listened)


def forecast_narration(item: Item, profile: ModelProfile, *,
                       instructions: str | None) -> ItemForecast:
    max_words = max_words_per_request(profile.max_output_audio_tokens,
                                      profile.output_audio_tokens_per_s, profile.words_per_minute)
    chunks = split_for_narration(item_text(item), max_words)
    usage = Usage()
    for chunk in chunks:
        usage = usage + expected_narrate_usage(chunk, profile, instructions)
    seconds = usage.completion_audio_tokens / profile.output_audio_tokens_per_s
    return ItemForecast(item.item_id, profile.model, len(chunks), usage, seconds=seconds)


def forecast_items(items: list[Item], kind: str, *, default_model: str,
                   profile_for: Callable[[str], ModelProfile],
                   prices_for: Callable[[str], Prices | None], prompt: str | None = None,
                   language: str | None = None, instructions: str | None = None,
                   economy: Callable[[Item], Economy | None] = lambda item: None,
                   context_words: int = 0) -> list[ItemForecast]:
    """One forecast per item; unusable items carry their problem and cost nothing."""
    forecasts = []
    for item in items:
        model = item.options.get("model") or default_model
        if item.error:
            forecasts.append(ItemForecast(item.item_id, model, problem=item.error))
            continue
        try:
            if kind == TRANSCRIBE:
                forecast = forecast_transcription(
                    item, profile_for(model), prompt=item.options.get("prompt") or prompt,
                    language=item.options.get("language") or language, economy=economy(item),
                    context_words=context_words)
            else:
                forecast = forecast_narration(
                    item, profile_for(model),
                    instructions=item.options.get("instructions") or instructions)
        except AudiobatchError as error:
            forecasts.append(ItemForecast(item.item_id, model, problem=_without_id(str(error), item),
                                          countable_later=isinstance(error, NotCountable)))
            continue
        forecast.cost_usd = cost_usd(forecast.usage, prices_for(model))
        forecasts.append(forecast)
    return forecasts


def forecast_table(forecasts: list[ItemForecast]) -> list[dict]:
    """Totals per model: items, requests, hours, tokens (audio/text, in/out), dollars."""
    table: dict[str, dict] = {}
    for f in (f for f in forecasts if f.problem is None):  # what is counted, and only that
        row = table.setdefault(f.model, {"model": f.model, "items": 0,
                                         "requests": 0, "hours": 0.0, "usage": Usage(),
                                         "cost_usd": 0.0})
        row["items"] += 1
        row["requests"] += f.requests
        row["hours"] += f.seconds / 3600
        row["usage"] = row["usage"] + f.usage
        known = row["cost_usd"] is not None and f.cost_usd is not None  # one unpriced model
        row["cost_usd"] = row["cost_usd"] + f.cost_usd if known else None  # makes it unknown
    return list(table.values())


def render_forecast(table: list[dict], kind: str, priced_as: str) -> str:
    hours_label = "audio h in" if kind == TRANSCRIBE else "audio h out"
    lines = [f"{'model':<22} {'items':>6} {'requests':>9} {hours_label:>11} {'audio tok in':>13} "
             f"{'text tok in':>12} {'audio tok out':>14} {'text tok out':>13} {'USD':>10}"]
    for row in table:
        u = row["usage"]
        dollars = "unknown" if row["cost_usd"] is None else f"{row['cost_usd']:.4f}"
        lines.append(f"{row['model']:<22} {row['items']:>6} {row['requests']:>9} "
                     f"{row['hours']:>11.3f} {u.prompt_audio_tokens:>13,} {u.prompt_text_tokens:>12,} "
                     f"{u.completion_audio_tokens:>14,} {u.completion_text_tokens:>13,} {dollars:>10}")
    lines.append(f"prices: {priced_as}")
    return "\n".join(lines)


def render_reasks(table: list[dict]) -> str:
    """What transcript QA's re-asks may add: at most one more request per chunk, priced as the
    first (a re-ask sends the same audio with a longer instruction)."""
    requests = sum(row["requests"] for row in table)
    costs = [row["cost_usd"] for row in table]
    dollars = "unknown" if None in costs else f"{sum(costs):.4f} USD"
    return (f"re-asks: QA asks again only for a reply that does not agree with its audio, once, and "
            f"only when asking again can change the answer: at most {requests} more requests "
            f"(+{dollars}) if every reply failed; none on a clean run (benchmarks/qa_agreement.py)")


def render_economy(forecasts: list[ItemForecast]) -> str:
    """One line: audio recorded vs sent under economy, and how it was found."""
    counted = [f for f in forecasts if f.problem is None]
    recorded, sent = sum(f.recorded_s for f in counted), sum(f.seconds for f in counted)
    listened = sum(f.listened for f in counted)
    fewer = 1 - sent / recorded if recorded else 0.0
    line = (f"economy: {recorded / 3600:.3f} h recorded -> {sent / 3600:.3f} h sent "
            f"({fewer:.0%} fewer audio tokens); pauses heard in {listened} of {len(counted)} files")
    if listened < len(counted):
        line += " (the others counted at their duration: an upper bound)"
    return line


def _without_id(message: str, item: Item) -> str:
    """The item's id is printed once, in front: drop it from the start of a message."""
    return message.removeprefix(f"{item.item_id}: ")


def render_problems(forecasts: list[ItemForecast], *, countable_later: bool = False) -> str:
    """Rows that will fail (default), or rows that will run but cannot be sized in advance."""
    return "\n".join(f"  {f.item_id}: {f.problem}" for f in forecasts
                     if f.problem and f.countable_later == countable_later)
