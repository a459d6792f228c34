"""The `transcribe-manifest` flow: a manifest of audio in, transcripts and cost reports out."""
from __future__ import annotations

from prefect.client.schemas.objects import State

from audiobatch.flows.common import execute_run, run_state
from audiobatch.flows.flow_class import audiobatch_flow
from audiobatch.flows.guard import manifest_trust
from audiobatch.tasks.inputs.manifest import TRANSCRIBE
from audiobatch.tasks.options import TranscribeOptions
from audiobatch.tasks.run.context import RunOptions
from audiobatch.tasks.transcription.transcribe import transcribe_item


@audiobatch_flow(name="transcribe-manifest", log_prints=True)
async def transcribe_manifest(manifest: str, out: str = "outputs",
                              options: TranscribeOptions = TranscribeOptions()) -> State:
    """Transcribe every row of `manifest` (CSV or Parquet; local path or fsspec URL) into `out`.

    With no model or base URL the embedded model runs in-process. The API key for a remote
    endpoint comes from OPENAI_API_KEY in the environment, never from a parameter.
    The run ends Completed when every item is ok, else Failed (outputs are written either
    way): call it with `return_state=True` and read the summary with `common.summary_of`.
    """
    run = RunOptions.from_job(TRANSCRIBE, manifest, out, options)
    return run_state(await execute_run(run, transcribe_item, await manifest_trust(run, options)))
