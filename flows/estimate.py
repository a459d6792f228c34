"""`audiobatch estimate`: expected requests, tokens and dollars per model, nothing sent."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from audiobatch.flows.runtime import client_settings, resolve_pricing, resolve_profile
from audiobatch.tasks.audio.economy import economy_for
from audiobatch.tasks.inputs.manifest import NARRATE, TRANSCRIBE, read_manifest
from audiobatch.tasks.inputs.manifest_io import ManifestError, read_rows
from audiobatch.tasks.run.context import RunOptions
from audiobatch.tasks.run.forecast import (ItemForecast, forecast_items, forecast_table, render_economy,
                                           render_forecast, render_problems, render_reasks)


def detect_kind(manifest: str) -> str:
    """transcribe when the header has an `audio` column, narrate when it has text/text_file."""
    cells = next(iter(read_rows(manifest)), (0, []))[1]
    header = {cell.strip().lower().replace("-", "_").replace(" ", "_") for cell in cells}
    if "audio" in header:
        return TRANSCRIBE
    if header & {"text", "text_file"}:
        return NARRATE
    found = ", ".join(repr(c.strip()) for c in cells if c.strip()) or "none"
    raise ManifestError(f"manifest {manifest}, line 1: no 'audio' column (to transcribe) and no "
                        f"'text' or 'text_file' column (to narrate) (found: {found}). Rename the "
                        "column that holds the inputs, or pass --kind.")


def forecast(options: RunOptions) -> tuple[list[ItemForecast], str]:
    """Per-item forecasts for the manifest, and a label of the prices used."""
    settings = client_settings(options)
    items = read_manifest(options.manifest, options.kind)
    _, priced_as = resolve_pricing(options, settings.model, settings.provider)
    forecasts = forecast_items(
        items, options.kind, default_model=settings.model,
        profile_for=lambda model: resolve_profile(options, model),
        prices_for=lambda model: resolve_pricing(options, model, settings.provider)[0],
        prompt=options.prompt, language=options.language, instructions=options.instructions,
        economy=lambda item: economy_for(options.economy, options.economy_speed,
                                         item.options.get("economy")),
        context_words=0 if options.overlap_s else options.context_words)
    return forecasts, priced_as


def estimate(options: RunOptions) -> str:
    forecasts, priced_as = forecast(options)
    table = forecast_table(forecasts)
    report = render_forecast(table, options.kind, priced_as)
    if options.kind == TRANSCRIBE and table:
        report += "\n" + render_reasks(table)
    if options.kind == TRANSCRIBE and any(f.listened or f.seconds < f.recorded_s for f in forecasts):
        report += "\n" + render_economy(forecasts)
    later = render_problems(forecasts, countable_later=True)
    if later:
        report += f"\nnot counted (they will run; their size is known only then):\n{later}"
    problems = render_problems(forecasts)
    if problems:
        report += f"\nnot counted (fix these rows, or they will fail):\n{problems}"
    return report


def run_estimate(args: argparse.Namespace) -> int:
    kind = args.kind or detect_kind(args.manifest)
    options = RunOptions(kind=kind, manifest=args.manifest, model=args.model,
                         base_url=args.base_url, provider=args.provider, profiles=args.profiles,
                         price_as=args.price_as, max_audio_tokens=args.max_audio_tokens,
                         language=args.language, prompt=args.prompt, instructions=args.instructions,
                         economy=args.economy, economy_speed=args.economy_speed)
    economy_for(options.economy, options.economy_speed)  # a bad --economy-speed stops here (exit 2)
    if args.json:
        forecasts, priced_as = forecast(options)
        table = forecast_table(forecasts)
        models = [{**row, "usage": asdict(row["usage"])} for row in table]
        not_counted = [{"item_id": f.item_id, "problem": f.problem, "will_run": f.countable_later}
                       for f in forecasts if f.problem]
        counted = [f for f in forecasts if not f.problem]
        economy = {"recorded_s": sum(f.recorded_s for f in counted),
                   "sent_s": sum(f.seconds for f in counted),
                   "files_listened": sum(f.listened for f in counted)}
        reasks = {"reasks_at_most": {
            "requests": sum(row["requests"] for row in table),
            "cost_usd": None if any(row["cost_usd"] is None for row in table)
            else sum(row["cost_usd"] for row in table)}} if kind == TRANSCRIBE else {}
        print(json.dumps({"manifest": args.manifest, "kind": kind, "prices": priced_as,
                          "models": models, "not_counted": not_counted, **reasks,
                          **({"economy": economy} if any(f.listened for f in counted) else {})},
                         indent=2))
        return 0
    print(f"estimate for {args.manifest} ({kind}):")
    print(estimate(options))
    return 0
