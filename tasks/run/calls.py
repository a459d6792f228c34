"""One model request as the pipeline sees it: cache, budget, request, cost rows.

Every request of every item goes through `call_model`, so the rules hold everywhere: a
request whose answer is cached is not sent (a $0 `cached` row is recorded); a request whose
estimated cost would cross `--max-cost-usd` is not sent (BudgetExceeded, run-fatal); every
attempt that was sent lands in `costs`, failed ones included, at the moment it finishes.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from audiobatch.tasks.errors import BudgetExceeded, ModelError, UnreadableUsage
from audiobatch.tasks.model.cost import Usage, cost_usd
from audiobatch.tasks.model.profiles import Prices
from audiobatch.tasks.run.cache import ReplyRecord, cache_key
from audiobatch.tasks.run.context import ItemRecorder, RunContext


class Budget:
    """Dollars a run may spend; checked before each request against its estimate."""

    def __init__(self, max_cost_usd: float | None, spent_usd: float = 0.0) -> None:
        self.max_cost_usd = max_cost_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0

    def reserve(self, estimate_usd: float, what: str) -> None:
        if self.max_cost_usd is None:
            return
        if self.spent_usd + self.reserved_usd + estimate_usd > self.max_cost_usd:
            raise BudgetExceeded(
                f"budget reached: ${self.spent_usd:.4f} spent, the next request ({what}) is "
                f"estimated at ${estimate_usd:.4f}, which would cross --max-cost-usd "
                f"{self.max_cost_usd:g}. Finished work is kept; raise the limit and re-run to continue.")
        self.reserved_usd += estimate_usd

    def settle(self, estimate_usd: float, actual_usd: float) -> None:
        if self.max_cost_usd is None:
            return
        self.reserved_usd = max(0.0, self.reserved_usd - estimate_usd)
        self.spent_usd += actual_usd


def cost_row(ctx: RunContext, item_id: str, chunk_index: int, *, attempt: int, usage: Usage,
             model: str, priced_model: str | None = None, latency_s: float = 0.0,
             http_status: int | None = None, request_id: str | None = None, cached: bool = False,
             error_type: str | None = None, error_message: str | None = None,
             audio_s: tuple[float, float] | None = None, reask_reason: str | None = None,
             usage_known: bool = True, request_kind: str | None = None) -> dict[str, Any]:
    """One `costs` row, priced at the rates of the model the request asked for (`priced_model`,
    default `model`; or --price-as); the cost is None when the reply's usage could not be read
    (the request may still have been billed). `audio_s` = (recorded, sent) seconds of a
    transcription chunk: economy sends fewer than it stands for, and `saved_usd` prices the
    difference as audio in."""
    prices, priced_as = ctx.pricing(priced_model or model)
    recorded_s, sent_s = audio_s if audio_s else (None, None)
    unsent_s = recorded_s - sent_s if audio_s and not cached and error_type is None else 0.0
    return {
        "run_id": ctx.run_id, "item_id": item_id, "chunk_index": chunk_index, "attempt": attempt,
        "model": model, "provider": ctx.provider, "priced_as": priced_as,
        "prompt_text_tokens": usage.prompt_text_tokens,
        "prompt_audio_tokens": usage.prompt_audio_tokens,
        "completion_text_tokens": usage.completion_text_tokens,
        "completion_audio_tokens": usage.completion_audio_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": 0.0 if cached else cost_usd(usage, prices) if usage_known else None,
        "latency_s": latency_s, "http_status": http_status, "request_id": request_id,
        "cached": cached, "error_type": error_type, "error_message": error_message,
        "recorded_audio_s": recorded_s, "sent_audio_s": sent_s,
        "saved_usd": (_saved_usd(ctx, prices, unsent_s) if unsent_s > 0 else 0.0) if audio_s else None,
        "reask_reason": reask_reason,  # why QA asked this chunk again (tasks/transcription/qa.py)
        "request_kind": request_kind,  # transcribe | narrate | chapters: what the request was for
    }


def _saved_usd(ctx: RunContext, prices: Prices | None, seconds: float) -> float | None:
    """What `seconds` of input audio would have cost at the run's prices."""
    tokens = Usage(prompt_audio_tokens=round(seconds * ctx.profile.input_audio_tokens_per_s))
    return cost_usd(tokens, prices)


def _attempt_rows(ctx: RunContext, recorder: ItemRecorder, chunk_index: int, model: str,
                  attempts: list[Any], audio_s: tuple[float, float] | None,
                  first_attempt: int = 1, reask_reason: str | None = None,
                  answered_by: str | None = None, request_kind: str | None = None) -> list[dict[str, Any]]:
    return [cost_row(ctx, recorder.item.item_id, chunk_index, attempt=a.attempt + first_attempt - 1,
                     usage=a.usage, model=answered_by or model, priced_model=model,
                     latency_s=a.latency_s, http_status=a.http_status, request_id=a.request_id,
                     error_type=a.error_type, error_message=a.error_message, audio_s=audio_s,
                     reask_reason=reask_reason, usage_known=a.error_type != UnreadableUsage.kind,
                     request_kind=request_kind)
            for a in attempts]


def _spent(rows: list[dict[str, Any]], estimate: float) -> float:
    """What the attempts cost, for the budget; an attempt whose usage was unreadable counts
    as its estimate (it may have been billed)."""
    return sum(estimate if r["cost_usd"] is None else r["cost_usd"] for r in rows)


def attempts_before(recorder: ItemRecorder, chunk_index: int) -> int:
    """Attempts already recorded for this chunk (a re-ask's are numbered after them)."""
    return max((r["attempt"] for r in recorder.costs if r["chunk_index"] == chunk_index), default=0)


def record_costs(ctx: RunContext, recorder: ItemRecorder, rows: list[dict[str, Any]]) -> None:
    recorder.costs.extend(rows)
    # a paid request is a fact the moment it is answered: on disk (or in the store) at once
    ctx.staging.stage_rows("costs", rows, durable=any(not r["cached"] for r in rows))


async def call_model(ctx: RunContext, recorder: ItemRecorder, *, chunk_index: int,
                     payload: bytes | Path, params: dict[str, Any], expected: Usage,
                     send: Callable[[], Awaitable[Any]], first_attempt: int = 1,
                     audio_s: tuple[float, float] | None = None,
                     reask_reason: str | None = None) -> ReplyRecord:
    """Answer one chunk's request from the cache, or send it within the budget and record it.

    `first_attempt` numbers the cost rows of a chunk asked for again (a narration take after a
    failed verification, a transcription re-ask after failed QA, `reask_reason` saying why)
    after the rows it already has.

    `payload` is what the answer depends on (a chunk's audio file, or its text), for the cache
    key; `send` builds the request itself only when the limiter lets it go. `audio_s`, for
    transcription: the chunk's (recorded, sent) seconds, kept on its cost rows."""
    model = params.get("model") or ctx.model
    kind = params.get("kind")
    # --no-cache: no key to look up or store under, so the chunk's audio is not hashed
    key = (cache_key(payload, model=model, endpoint=ctx.endpoint, params=params)
           if ctx.cache.enabled else "")
    hit = ctx.cache.get(key)
    item_id = recorder.item.item_id
    if hit is not None:
        if (item_id, chunk_index) not in ctx.paid_chunks:  # a crash-resumed chunk keeps its paid row
            record_costs(ctx, recorder, [cost_row(ctx, item_id, chunk_index, attempt=first_attempt,
                                                  usage=hit.usage, model=hit.model,
                                                  priced_model=model, request_id=hit.request_id,
                                                  cached=True, audio_s=audio_s,
                                                  reask_reason=reask_reason, request_kind=kind)])
        return hit
    estimate = cost_usd(expected, ctx.pricing(model)[0]) or 0.0  # the request's own model's rates
    ctx.budget.reserve(estimate, f"{item_id} chunk {chunk_index}")
    try:
        reply = await send()
    except ModelError as error:
        rows = _attempt_rows(ctx, recorder, chunk_index, model, getattr(error, "attempts", []),
                             audio_s, first_attempt, reask_reason, request_kind=kind)
        record_costs(ctx, recorder, rows)
        ctx.budget.settle(estimate, _spent(rows, estimate))
        raise
    rows = _attempt_rows(ctx, recorder, chunk_index, model, reply.attempts, audio_s,
                         first_attempt, reask_reason, answered_by=reply.model, request_kind=kind)
    record_costs(ctx, recorder, rows)
    ctx.budget.settle(estimate, _spent(rows, estimate))
    record = ReplyRecord(text=reply.text, audio=reply.audio, audio_format=reply.audio_format,
                         model=reply.model or model, usage=reply.usage, request_id=reply.request_id,
                         finish_reason=reply.finish_reason, refusal=reply.refusal,
                         language=reply.language, language_probability=reply.language_probability,
                         tool_name=reply.tool_name, tool_arguments=reply.tool_arguments)
    ctx.cache.put(key, record)
    return record
