"""A real run with failures, seen the way an operator sees it: the summary, the flow run's
state and logs in Prefect, `audiobatch runs`, and `audiobatch report` rendered by Chromium."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort

from audiobatch.flows.cli import main
from tests.helpers.data import SPEECH

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


def _png_pixels_vary(png: bytes) -> bool:
    """True when the decoded image data is not one flat colour (a blank page)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, position = b"", 8
    while position < len(png):
        length = int.from_bytes(png[position:position + 4], "big")
        if png[position + 4:position + 8] == b"IDAT":
            data += png[position + 8:position + 8 + length]
        position += 12 + length
    return len(set(zlib.decompress(data))) > 16


def test_report_is_one_self_contained_page_that_chromium_renders(failed_run, tmp_path, capsys) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(failed_run["out"]), "last", "--html", str(page)]) == 0
    html = page.read_text()
    assert "src=" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html and "&lt;script&gt;" in html  # escaped
    for chart in ("Cost per item", "Item audio duration vs wall time", "Request latency",
                  "Throughput", "Retries and errors by kind"):
        assert chart in html
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1400",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    assert _png_pixels_vary(shot.read_bytes())
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert dom.count("<svg") == 5 and "markup" in dom and "<script>" not in dom
