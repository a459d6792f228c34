"""The options of a job, as one pydantic model per flow: what users pass, deployments store and
the Prefect UI shows (one collapsible group per concern).

Flows take `options: TranscribeOptions | NarrateOptions | InboxOptions`; the pipeline itself
works on the flat, frozen `tasks.run.context.RunOptions` made from it (`run_options`). The command
line keeps flat flags (`--concurrency`): `from_flat` files each one under its group.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.fields import FieldInfo


# Run ids become folder names: one strict pattern everywhere (tasks.inputs.trust.check_run_id).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A vocabulary term (tasks.inputs.vocabulary): 1-4 words of letters, digits and ' . & + - /.
VOCABULARY_TERM_PATTERN = r"^[\w'’.&+/-]+(?: [\w'’.&+/-]+){0,3}$"
VocabularyTerm = Annotated[str, StringConstraints(min_length=1, max_length=48,
                                                  pattern=VOCABULARY_TERM_PATTERN)]


MAX_SPEAKERS = 20


def speakers_setting(raw: Any) -> str:
    """`--speakers`, the `speakers` option and a manifest's `speakers` column: "auto" (the
    number is found), or a whole number of speakers from 1 to MAX_SPEAKERS, as text."""
    text = str(raw).strip().lower()
    if text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= MAX_SPEAKERS:  # also "0", "-1", "2.5", "x"
        raise ValueError(f"speakers {str(raw)[:40]!r} is not 'auto' or a number of speakers "
                         f"from 1 to {MAX_SPEAKERS}")
    return str(int(text))


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelChoice(_Group):
    """Which endpoint and model answer, and how their usage is priced."""

    model: str | None = Field(None, description="model id (default: the embedded model, or "
                              "AUDIOBATCH_MODEL; gpt-audio-1.5 when base_url is set)")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (default: "
                                 "OPENAI_BASE_URL, else the embedded model)")
    provider: str | None = Field(None, description="price table (default: the base URL's host)")
    profiles: str | None = Field(None, description="TOML file with model profiles and prices")
    price_as: str | None = Field(None, description="price usage as this OpenAI model")


class Throughput(_Group):
    """How fast, how hard to retry, and where to stop."""

    concurrency: int = Field(4, ge=1, description="requests in flight")
    requests_per_minute: float | None = Field(None, gt=0, description="request rate cap")
    tokens_per_minute: float | None = Field(None, gt=0, description="token rate cap")
    max_attempts: int = Field(6, ge=1, description="attempts per request")
    max_backoff_s: float = Field(30.0, ge=0, description="longest wait between attempts")
    timeout_s: float = Field(120.0, gt=0, description="timeout per attempt")
    item_deadline_s: float | None = Field(None, gt=0, description="give up on an item after this")
    max_cost_usd: float | None = Field(None, ge=0, description="stop before spending more")
    max_download_mb: float = Field(4096.0, gt=0, description="size cap per downloaded source")
    download_deadline_s: float = Field(3600.0, gt=0, description="time limit per download")
    min_download_kb_s: float = Field(16.0, ge=0, description="slowest acceptable download "
                                     "rate, KB/s over 30 s (0: no minimum)")
    allow_schemes: list[str] = Field(default_factory=list,
                                     description="fsspec URL schemes to enable (s3, gs, ...)")
    allow_hosts: list[str] = Field(default_factory=list, description="HOST[:PORT] that URLs in "
                                   "manifests and feeds may reach although not public (intranet)")
    data_roots: list[str] = Field(default_factory=list, description="local folders "
                                  "that runs started by others (submit, the inbox, the Prefect API) "
                                  "may read local files from; none: no local files (the inbox: "
                                  "its own folder)")

    @field_validator("allow_schemes")
    @classmethod
    def _plain_schemes(cls, schemes: list[str]) -> list[str]:
        """Scheme names only: a chained fsspec URL (a::b) is never enabled."""
        for scheme in schemes:
            if not re.fullmatch(r"[a-z][a-z0-9+.\-]*", scheme):
                raise ValueError(f"{scheme!r} is not a URL scheme name (like s3 or gs)")
        return schemes

    @field_validator("data_roots")
    @classmethod
    def _local_folders(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if "://" in root or "::" in root or not root.strip():
                raise ValueError(f"{root!r}: a data root is a local folder (an object store is "
                                 "enabled with allow_schemes instead)")
        return roots


class Reruns(_Group):
    """Resuming, caching and re-running."""

    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN,
                               description="use (or resume) this run id (1-64 of A-Z a-z 0-9 . _ -)")
    resume: bool = Field(True, description="resume an unfinished run of the same job")
    use_cache: bool = Field(True, description="answer repeated requests from the result cache")
    rerun_failed: str | None = Field(None, pattern=RUN_ID_PATTERN, description="only the items "
                                     "that failed in that run ('last' for the latest)")


class ScaleOut(_Group):
    """Where the work runs: shards on a work pool's workers, item tasks on Dask."""

    shards: int = Field(1, ge=1, le=1000, description="split the manifest into this many flow "
                        "runs of this deployment, run by any workers of its pool")
    shard: int | None = Field(None, ge=0, description="set by a sharded run for its children: "
                              "the shard this run works on (0-based)")
    task_runner: str = Field("default", pattern=r"^(default|dask|dask://[A-Za-z0-9.\-\[\]:]+)$",
                             description="'default' (this process), 'dask' (a local cluster) or "
                             "dask://HOST:PORT (an existing Dask scheduler)")
    dask_workers: int | None = Field(None, ge=1, le=256, description="processes of the local "
                                     "Dask cluster (default: one per CPU)")


class Transcription(_Group):
    language: str | None = Field(None, description="ISO 639-1 language (default: per row)")
    prompt: str | None = Field(None, description="context: names, spellings, topic")
    vocabulary: list[VocabularyTerm] = Field(default_factory=list, max_length=100, description=
                                             "names and terms to spell right (hints to the "
                                             "model; near misses checked; per row: vocabulary)")
    max_audio_tokens: int | None = Field(None, gt=0, description="per-request audio-in budget")
    overlap_s: float = Field(0.0, ge=0, description="overlap between chunks, de-duplicated")
    economy: bool = Field(False, description="send less audio: long pauses shortened, more "
                          "speech per request; times stay on the recording's (per row: economy)")
    economy_speed: float | None = Field(None, ge=1.0, le=2.0, description="economy with speech "
                                        "this much faster, pitch kept (default: the preset's)")
    word_times: bool = Field(True, description="align words to the audio with the embedded "
                             "Whisper: `words` dataset, captions timed from words")
    output_format: str = Field("all", description="transcript files: all, or a comma list of "
                               "txt, srt, vtt, json")
    context_words: int = Field(60, ge=0, le=200, description="words of the previous chunk's "
                               "transcript sent as context with the next (0: chunks in parallel)")
    qa: bool = Field(True, description="check every reply (chatter, refusal, answer, loop, "
                     "truncation, coverage); re-ask once, then flag")
    qa_reference: bool = Field(True, description="compare a remote model's replies with what "
                               "the embedded Whisper hears in the same chunk")
    chapters: str = Field("off", pattern=r"^(off|auto|offline)$", description="chapters, show "
                          "notes and sponsor spots: 'auto' (a tool call to a remote model; offline "
                          "with the embedded one), 'offline' (never a request) or 'off' (per row: "
                          "chapters)")
    speakers: str | None = Field(None, description="speaker labels: auto, or the number of "
                                 "speakers (1-20); none: off (per row: speakers)")

    @field_validator("speakers")
    @classmethod
    def _speakers(cls, value: str | None) -> str | None:
        return None if value is None else speakers_setting(value)


class CaptionStyle(_Group):
    """How captions (.srt/.vtt) are cut and timed: broadcast rules (Netflix and BBC timed-text
    guidelines; tasks/captions/cues.py). Unset limits take the preset's."""

    caption_preset: Literal["broadcast", "children"] = Field(
        "broadcast", description="broadcast: 42 characters a line, 2 lines, 1-7 s, 20 "
        "characters a second; children: 17 characters a second")
    caption_line_chars: int | None = Field(None, ge=10, le=80, description="characters a line")
    caption_lines: int | None = Field(None, ge=1, le=3, description="lines a caption")
    caption_min_s: float | None = Field(None, gt=0, le=5, description="shortest caption, seconds")
    caption_max_s: float | None = Field(None, gt=0, le=30, description="longest caption, seconds")
    caption_cps: float | None = Field(None, ge=5, le=60, description="reading speed: characters "
                                      "a second at most")

    @model_validator(mode="after")
    def _shortest_below_longest(self) -> CaptionStyle:
        shortest, longest = self.caption_min_s or 1.0, self.caption_max_s or 7.0  # the presets'
        if shortest >= longest:
            raise ValueError(f"the shortest caption ({shortest} s) must be shorter than the "
                             f"longest ({longest} s)")
        return self


class Narration(_Group):
    voice: str = Field("alloy", description="voice (per row: voice)")
    audio_format: str = Field("mp3", description="wav, mp3, flac, opus or m4b (audiobook with chapters)")
    speed: float = Field(1.0, description="0.25-4.0, pitch preserved")
    instructions: str | None = Field(None, description="style or tone for the narrator")
    target_lufs: float = Field(-16.0, description="loudness of the finished file")
    max_audio_tokens: int | None = Field(None, gt=0, description="per-request audio-out budget")
    verify: bool = Field(True, description="hear each chunk back with the embedded model and "
                         "narrate again what is misheard (tasks/narration/verify.py)")
    verify_attempts: int = Field(3, ge=1, description="takes per chunk before it is flagged")
    captions: bool = Field(True, description="exact captions (.srt/.vtt): the text's words "
                           "timed to the audio by forced alignment")
    feed_url: str | None = Field(None, description="public URL of <out>/media/: write a podcast "
                                 "feed of the narrations there (media/feed.xml)")


class JobOptions(_Group):
    """What every job shares; the per-kind models add their own group."""

    model: ModelChoice = Field(default_factory=ModelChoice)
    throughput: Throughput = Field(default_factory=Throughput)
    reruns: Reruns = Field(default_factory=Reruns)
    scale: ScaleOut = Field(default_factory=ScaleOut)
    progress: bool | None = Field(None, description="progress bar (default: on a terminal)")

    @classmethod
    def from_flat(cls, **flat: Any) -> JobOptions:
        """Build from flat names (`concurrency=8`); None means "the default"."""
        unknown = set(flat) - flat_names(cls)
        if unknown:
            raise ValueError(f"not an option of {cls.__name__}: {', '.join(sorted(unknown))}")
        return cls.model_validate(nested(cls, {k: v for k, v in flat.items() if v is not None}))

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name (the kind's own group last, so it wins a shared name)."""
        values: dict[str, Any] = {"progress": self.progress}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, _Group):
                values.update(value.model_dump())
        return values


class TranscribeOptions(JobOptions):
    transcription: Transcription = Field(default_factory=Transcription)
    caption_style: CaptionStyle = Field(default_factory=CaptionStyle)


class NarrateOptions(JobOptions):
    narration: Narration = Field(default_factory=Narration)
    caption_style: CaptionStyle = Field(default_factory=CaptionStyle)


class InboxOptions(JobOptions):
    """An inbox holds manifests of both kinds: each runs with its kind's group."""

    transcription: Transcription = Field(default_factory=Transcription)
    narration: Narration = Field(default_factory=Narration)
    caption_style: CaptionStyle = Field(default_factory=CaptionStyle)

    def for_kind(self, kind: str) -> JobOptions:
        own = {"transcribe": ("transcription", TranscribeOptions),
               "narrate": ("narration", NarrateOptions)}
        group, model = own[kind]
        shared = {name: getattr(self, name) for name in JobOptions.model_fields}
        return model(**shared, **{group: getattr(self, group)}, caption_style=self.caption_style)


def _groups(model: type[JobOptions]) -> dict[str, type[_Group]]:
    """Field name -> group model, for the fields of `model` that are groups."""
    return {name: field.annotation for name, field in model.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, _Group)}


def flat_names(model: type[JobOptions]) -> set[str]:
    """Every flat option name a model accepts (for checking what a user typed)."""
    groups = _groups(model)
    names = {name for name in model.model_fields if name not in groups}
    for group in groups.values():
        names |= set(group.model_fields)
    return names


def option_fields(model: type[JobOptions]) -> list[tuple[tuple[str, ...], FieldInfo]]:
    """Every option of `model` as (its path: (group, name) or (name,), its field): one entry per
    group's field, also where two groups share a name (`max_audio_tokens`)."""
    groups = _groups(model)
    fields = [((name,), field) for name, field in model.model_fields.items() if name not in groups]
    for group_name, group in groups.items():
        fields += [((group_name, name), field) for name, field in group.model_fields.items()]
    return fields


def option_value(options: JobOptions, path: tuple[str, ...]) -> Any:
    value: Any = options
    for name in path:
        value = getattr(value, name)
    return value


def nested(model: type[JobOptions], flat: dict[str, Any]) -> dict[str, Any]:
    """Only the given flat options, as the nested dict a deployment stores (no defaults added)."""
    groups = _groups(model)
    result: dict[str, Any] = {name: flat[name] for name in model.model_fields
                              if name not in groups and name in flat}
    for name, group in groups.items():
        chosen = {k: v for k, v in flat.items() if k in group.model_fields}
        if chosen:
            result[name] = chosen
    return result


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, group by group (Prefect merges run parameters shallowly)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
