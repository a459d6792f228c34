"""The `narrate-manifest` flow: a manifest of texts in, narrated audio files and costs out."""
from __future__ import annotations

from prefect import flow

from flows.common import execute_run
from tasks.manifest import NARRATE
from tasks.narration import narrate_item
from tasks.runs import RunOptions


@flow(name="narrate-manifest", log_prints=True)
async def narrate_manifest(
    manifest: str,
    out: str = "outputs",
    model: str | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    voice: str = "alloy",
    audio_format: str = "mp3",
    speed: float = 1.0,
    instructions: str | None = None,
    target_lufs: float = -16.0,
    max_audio_tokens: int | None = None,
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
    """Narrate every row of `manifest` into audio files under `out`.

    Per-row columns (voice, format, speed, instructions, title, model) override these defaults.
    The API key for a remote endpoint comes from OPENAI_API_KEY, never from a parameter.
    """
    options = RunOptions(
        kind=NARRATE, manifest=manifest, out=out, model=model, base_url=base_url,
        provider=provider, concurrency=concurrency, requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute, max_attempts=max_attempts, max_backoff_s=max_backoff_s,
        timeout_s=timeout_s,
        item_deadline_s=item_deadline_s, max_cost_usd=max_cost_usd, price_as=price_as,
        profiles=profiles, run_id=run_id, use_cache=use_cache, resume=resume,
        rerun_failed=rerun_failed, allow_schemes=tuple(allow_schemes or ()),
        max_download_mb=max_download_mb, progress=progress, voice=voice,
        audio_format=audio_format, speed=speed, instructions=instructions,
        target_lufs=target_lufs, max_audio_tokens=max_audio_tokens,
    )
    return await execute_run(options, narrate_item)
