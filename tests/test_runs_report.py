"""Real runs seen the way an operator sees them: the summary, the flow run's state and logs in
Prefect, `audiobatch runs`, and `audiobatch report` laid out by Chromium at a desktop's width
(1280 px) and a phone's (390 px): full item labels, nothing cut or overflowing, readable text;
a narration run's report shows what verification heard, loudness and durations."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort

from audiobatch.flows.cli import main
from audiobatch.tasks.reports.history import record_from_rows
from audiobatch.tasks.reports.report import render_html
from audiobatch.tasks.reports.sections import RunData
from tests.helpers.browser import layout, pixels_vary, screenshot
from tests.helpers.data import SPEECH
from tests.helpers.e2e import write_manifest

pytestmark = pytest.mark.usefixtures("prefect_api")
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def failed_run(prefect_api, tmp_path_factory) -> dict:
    """One transcription run from the command line: 1 ok, 3 failed (missing file, bad id,
    a path with markup in it), summary as JSON."""
    folder = tmp_path_factory.mktemp("runs")
    manifest = folder / "m.csv"
    manifest.write_text("id,audio\n"
                        f"go,{SPEECH / 'pocketsphinx__goforward.wav'}\n"
                        "missing,missing.wav\n"
                        f"bad/id,{SPEECH / 'pocketsphinx__goforward.wav'}\n"
                        f"markup,{HOSTILE}.wav\n")
    out = folder / "out"
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["transcribe", str(manifest), "--out", str(out), "--no-progress", "--json"])
    return {"code": code, "summary": json.loads(stdout.getvalue()), "out": out, "folder": folder}


def test_exit_code_summary_and_flow_state_agree(failed_run) -> None:
    summary = failed_run["summary"]
    assert failed_run["code"] == 1 and (summary["ok"], summary["failed"]) == (1, 3)
    assert [(p["item_id"], p["row"]) for p in summary["problems"]] == [("missing", 3), ("row-4", 4),
                                                                     ("markup", 5)]
    assert "file not found" in summary["problems"][0]["error_message"]
    from audiobatch.flows.common import as_summary

    text = as_summary(summary).text()
    assert "failed or skipped (3):" in text and "missing (row 3): " in text
    assert f"full list: audiobatch runs {failed_run['out']} {summary['run_id']}" in text

    async def flow_run_and_logs():
        async with get_client() as client:
            # newest first: the session's server holds every earlier test's runs too
            runs = await client.read_flow_runs(limit=50, sort=FlowRunSort.START_TIME_DESC)
            run = next(r for r in runs if r.state and summary["run_id"] in (r.state.message or ""))
            for _ in range(40):  # log lines reach the API in batches, a few seconds late
                logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
                if any(log.message.startswith("failed row-4") for log in logs):
                    break
                await asyncio.sleep(0.5)
            return run, logs

    run, logs = asyncio.run(flow_run_and_logs())
    assert run.state.type.value == "FAILED" and "exit code 1" in run.state.message
    assert "1 ok, 3 failed" in run.state.message
    messages = [log.message for log in logs]
    # audiobatch's own lines reach the Prefect UI; each failure is one line there
    assert any(m.startswith("failed row-4 (row 4)") for m in messages)  # no task run: our line
    assert sum("missing.wav" in m for m in messages) == 1
    assert not any(m.startswith("Task run failed with state") for m in messages)


def test_runs_lists_runs_and_one_runs_failures(failed_run, capsys) -> None:
    out, run_id = str(failed_run["out"]), failed_run["summary"]["run_id"]
    assert main(["runs", out]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:4] == ["run", "kind", "start", "(UTC)"]
    assert listing[1].split()[0] == run_id and listing[1].split()[1] == "transcribe"
    assert listing[1].split()[5:8] == ["1", "3", "0"]
    assert main(["runs", out, "last", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["run_id"] == run_id and [f["item_id"] for f in run["failures"]] == ["missing", "row-4", "markup"]
    assert main(["runs", out, "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_report_is_one_self_contained_page_that_chromium_renders(failed_run, tmp_path) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(failed_run["out"]), "last", "--html", str(page)]) == 0
    html = page.read_text()
    assert "src=" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html and "&lt;script&gt;" in html  # escaped
    for chart in ("Cost per item", "Audio per item", "Item audio against wall time", "Request latency",
                  "Items finished over the run", "Retries and errors by kind", "Transcript QA"):
        assert chart in html
    assert "All 1 transcripts passed QA: no flags." in html
    assert pixels_vary(screenshot(page, 1280))
    for width in (1280, 390):
        seen = layout(page, width)
        fits(seen, width)
        # every item by its full id, the hostile one as text, never as markup
        assert all(item in seen["text"] for item in ("go", "missing", "row-4", "markup", HOSTILE))


def fits(seen: dict, width: int) -> None:
    """What a reader at this width needs: no sideways scrolling, nothing cut or drawn over
    something else, no column squeezed to a letter a line, text of a readable size."""
    assert seen["viewport"] == width and seen["page_width"] <= width, seen["page_width"]
    assert seen["beyond"] == [] and seen["cut"] == [] and seen["overlapping"] == []
    assert seen["narrow"] == []
    assert seen["smallest_text_px"] >= 11 and seen["smallest_svg_text_px"] >= 10


@pytest.fixture(scope="module")
def narration_run(prefect_api, tmp_path_factory) -> dict:
    """A real narration of two short texts whose ids share their first 26 characters (the old
    report cut labels to 10: both read "nc-test-po")."""
    folder = tmp_path_factory.mktemp("narration")
    ids = ["nc-test-podcast-episode-one-the-storm", "nc-test-podcast-episode-two-the-harbour"]
    manifest = write_manifest(folder / "m.csv", [
        {"id": ids[0], "text": "The storm came in from the west and the boats stayed in the harbour."},
        {"id": ids[1], "text": "By morning the sea was calm again, and the fishermen went out.",
         "format": "wav"}])
    out = folder / "out"
    assert main(["narrate", str(manifest), "--out", str(out), "--no-progress", "--no-captions"]) == 0
    page = folder / "report.html"
    assert main(["report", str(out), "last", "--html", str(page)]) == 0
    return {"ids": ids, "out": out, "page": page}


def test_narration_report_shows_verification_loudness_and_durations(narration_run) -> None:
    html = narration_run["page"].read_text()
    narrations = pd.read_parquet(narration_run["out"] / "narrations").set_index("item_id")
    checks = pd.read_parquet(narration_run["out"] / "narration_checks")
    assert "Narration: verification, loudness, durations" in html and "Transcript QA" not in html
    for item in narration_run["ids"]:
        row = narrations.loc[item]
        assert f">{row.loudness_lufs:.1f}<" in html and f"{row.loudness_lufs:.3g} LUFS" in html
        assert f">{row.duration_s:.3g}<" in html
        heard = checks[checks.item_id == item].sort_values("attempt")
        kept = [takes[takes.passed].wer.iloc[-1] if takes.passed.any() else takes.wer.min()
                for _, takes in heard.groupby("chunk_index")]  # as narration keeps a chunk's take
        assert f">{max(kept) * 100:.1f}%<" in html  # the item's worst kept chunk, as heard back
    assert html.count('class="dot') >= len(checks) + len(narrations)  # a dot per take, per loudness
    for width in (1280, 390):
        seen = layout(narration_run["page"], width)
        fits(seen, width)
        assert all(item in seen["text"] for item in narration_run["ids"])  # full labels


def test_report_of_hostile_ids_and_flags_fits_a_phone(tmp_path) -> None:
    """Ids of 128 characters without a space, markup in ids and flags, 60 items: the page still
    fits 390 px, shows every flag, and escapes everything."""
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    ids = ["x" * 128, "<img src=x onerror=alert(1)>", *(f"episode-{n:03d}-" + "y" * 40 for n in range(58))]
    items = [{"run_id": "r", "item_id": item, "kind": "narrate", "status": "ok", "row": n + 2,
              "duration_s": 30.0 + n, "cost_usd": 0.001 * n, "started_at": start,
              "finished_at": start + timedelta(seconds=n)} for n, item in enumerate(ids)]
    costs = [{"run_id": "r", "item_id": item, "chunk_index": 0, "attempt": 1, "latency_s": 1.0 + n % 7,
              "cost_usd": 0.001, "cached": False} for n, item in enumerate(ids)]
    rows = {"narrations": [{"item_id": item, "format": "m4b", "duration_s": 30.0 + n, "words": 90,
                            "loudness_lufs": -16.0 - n % 3, "chapters": 2,
                            "qa_flags": [f"chunk 0: <b>kept</b> after 3 takes ({n})"] if n < 3 else []}
                           for n, item in enumerate(ids)],
            "narration_checks": [{"item_id": item, "chunk_index": 0, "attempt": take, "wer": 0.3 / take,
                                  "passed": take == 2} for item in ids for take in (1, 2)]}
    page = tmp_path / "hostile.html"
    page.write_text(render_html(RunData(record_from_rows("r", items, costs), rows)))
    html = page.read_text()
    assert "<img" not in html and "<b>kept" not in html and "&lt;b&gt;kept" in html
    assert "the 40 largest of 60" in html  # a long run's per-item charts say what they left out
    for width in (1280, 390):
        seen = layout(page, width)
        fits(seen, width)
        assert "x" * 128 in seen["text"].replace("\n", "") and "<img src=x onerror=alert(1)>" in seen["text"]
        assert all(f"chunk 0: <b>kept</b> after 3 takes ({n})" in seen["text"] for n in range(3))
