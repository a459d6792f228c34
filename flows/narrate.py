"""The `narrate-manifest` flow: a manifest of texts in, narrated audio files and costs out."""
from __future__ import annotations

from prefect import flow

from audiobatch.flows.common import execute_run
from audiobatch.tasks.manifest import NARRATE
from audiobatch.tasks.narration import narrate_item
from audiobatch.tasks.options import NarrateOptions
from audiobatch.tasks.runs import RunOptions


@flow(name="narrate-manifest", log_prints=True)
async def narrate_manifest(manifest: str, out: str = "outputs",
                           options: NarrateOptions = NarrateOptions()) -> dict:
    """Narrate every row of `manifest` into audio files under `out`.

    Per-row columns (voice, format, speed, instructions, title, model) override the options.
    The API key for a remote endpoint comes from OPENAI_API_KEY, never from a parameter.
    """
    return await execute_run(RunOptions.from_job(NARRATE, manifest, out, options), narrate_item)
