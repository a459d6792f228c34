"""The `narrate-manifest` flow: a manifest of texts in, narrated audio files and costs out."""
from __future__ import annotations

from prefect.client.schemas.objects import State

from audiobatch.flows.common import execute_run, run_state
from audiobatch.flows.flow_class import audiobatch_flow
from audiobatch.flows.guard import manifest_trust
from audiobatch.tasks.inputs.manifest import NARRATE
from audiobatch.tasks.narration.feed import check_feed_url, publish_run_to_feed
from audiobatch.tasks.narration.narrate import narrate_item
from audiobatch.tasks.options import NarrateOptions
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.outputs.staging import RunStaging
from audiobatch.tasks.run.context import RunOptions, run_folder


@audiobatch_flow(name="narrate-manifest", log_prints=True)
async def narrate_manifest(manifest: str, out: str = "outputs",
                           options: NarrateOptions = NarrateOptions()) -> State:
    """Narrate every row of `manifest` into audio files under `out`.

    Per-row columns (voice, format, speed, instructions, title, model) override the options.
    The API key for a remote endpoint comes from OPENAI_API_KEY, never from a parameter.
    The run ends Completed when every item is ok, else Failed (outputs are written either
    way): call it with `return_state=True` and read the summary with `common.summary_of`.
    """
    run = RunOptions.from_job(NARRATE, manifest, out, options)
    if run.feed_url:
        check_feed_url(run.feed_url)  # before any work
    trust = await manifest_trust(run, options)
    summary = await execute_run(run, narrate_item, trust)
    if run.feed_url:
        root = OutputRoot(out)
        rows = RunStaging(run_folder(root, summary["run_id"])).final_rows("narrations")
        # items from others' manifests only add episodes, never replace one (tasks/narration/feed.py)
        update = publish_run_to_feed(root, rows, run.feed_url, replace=trust.local_roots is None)
        summary["feed"] = update.path if update else None
        print(f"podcast feed: {summary['feed']}")
        if update and update.kept:
            summary["feed_not_added"] = update.kept
            print(f"not in the feed: {', '.join(update.kept)} (an episode with the same item id is "
                  "there already, and this manifest is not the operator's: give new item ids)")
    return run_state(summary)
