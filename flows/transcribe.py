"""The `transcribe-manifest` flow: a manifest of audio in, transcripts and cost reports out."""
from __future__ import annotations

from prefect import flow

from flows.common import execute_run
from tasks.manifest import TRANSCRIBE
from tasks.runs import RunOptions
from tasks.transcription import transcribe_item


@flow(name="transcribe-manifest", log_prints=True)
async def transcribe_manifest(
    manifest: str,
    out: str = "outputs",
    model: str | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    language: str | None = None,
    prompt: str | None = None,
    max_audio_tokens: int | None = None,
    overlap_s: float = 0.0,
    max_cost_usd: float | None = None,
    price_as: str | None = None,
    provider: str | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    max_attempts: int = 6,
    max_backoff_s: float = 30.0,
    timeout_s: float = 120.0,
    item_deadline_s: float | None = None,
    profiles: str | None = None,
    run_id: str | None = None,
    resume: bool = True,
    use_cache: bool = True,
    rerun_failed: str | None = None,
    allow_schemes: list[str] | None = None,
    max_download_mb: float = 4096.0,
    progress: bool | None = None,
) -> dict:
    """Transcribe every row of `manifest` (CSV or Parquet; local path or fsspec URL) into `out`.

    With no `model`/`base_url` the embedded model runs in-process. The API key for a remote
    endpoint comes from OPENAI_API_KEY in the environment, never from a parameter.
    """
    options = RunOptions(
        kind=TRANSCRIBE, manifest=manifest, out=out, model=model, base_url=base_url,
        provider=provider, concurrency=concurrency, requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute, max_attempts=max_attempts, max_backoff_s=max_backoff_s,
        timeout_s=timeout_s,
        item_deadline_s=item_deadline_s, max_cost_usd=max_cost_usd, price_as=price_as,
        profiles=profiles, run_id=run_id, use_cache=use_cache, resume=resume,
        rerun_failed=rerun_failed, allow_schemes=tuple(allow_schemes or ()),
        max_download_mb=max_download_mb, progress=progress, language=language, prompt=prompt,
        max_audio_tokens=max_audio_tokens, overlap_s=overlap_s,
    )
    return await execute_run(options, transcribe_item)
