"""What a person meets at the command line: messages for mistakes (before Prefect starts),
--version, --help defaults, completion, estimate rows and the advice after a 404."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from audiobatch import __version__
from audiobatch.flows.cli import main
from audiobatch.tasks.errors import PermanentModelError
from audiobatch.tasks.model.client import ClientSettings, ModelClient
from tests.helpers.data import SPEECH

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`audiobatch` in its own process, with its own (empty) state and Prefect home, so that
    we can tell whether it started anything."""
    env = {**os.environ, "AUDIOBATCH_STATE_DIR": str(tmp_path / "state"),
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "audiobatch.flows.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def nothing_started(tmp_path: Path) -> bool:
    return not (tmp_path / "state").exists() and not (tmp_path / "prefect-home").exists()


def test_a_missing_manifest_is_one_line_naming_it_and_nothing_starts(tmp_path) -> None:
    result = cli("transcribe", str(tmp_path / "episodes.csv"), "--out", str(tmp_path / "out"),
                 tmp_path=tmp_path)
    line = one_line_error(result)
    assert str(tmp_path / "episodes.csv") in line and "not found" in line and "check the path" in line
    assert nothing_started(tmp_path) and not (tmp_path / "out").exists()


def test_a_wrong_header_names_the_file_the_columns_and_the_fix(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,file\na,x.wav\n")
    line = one_line_error(cli("transcribe", str(manifest), tmp_path=tmp_path))
    assert str(manifest) in line and "'audio'" in line and "'file'" in line and "Name the column" in line
    assert nothing_started(tmp_path)


def test_a_misspelled_flag_gets_the_subcommands_usage_and_a_suggestion(capsys) -> None:
    assert main(["transcribe", "m.csv", "--concurency", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: audiobatch transcribe ")
    assert "unrecognized arguments: --concurency 3 (did you mean --concurrency?)" in err
    assert main(["transcrbe", "m.csv"]) == 2
    assert "did you mean transcribe?" in capsys.readouterr().err


def test_a_bad_value_names_its_flag(capsys) -> None:
    assert main(["narrate", str(ROOT / "manifests" / "articles.csv"), "--concurrency", "0"]) == 2
    err = capsys.readouterr().err
    assert "usage: audiobatch narrate" in err and "--concurrency 0: input should be greater than" in err


def test_version_help_defaults_and_completion(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"audiobatch {__version__}"
    assert main(["transcribe", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "output root (folder or fsspec URL) (default: outputs)" in help_text
    assert main(["narrate", "--help"]) == 0
    assert "pitch preserved (default: 1.0)" in " ".join(capsys.readouterr().out.split())
    assert main(["serve", "--help"]) == 0
    assert "port to listen on (default: 8000)" in " ".join(capsys.readouterr().out.split())
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete" in script and "transcribe" in script and "--concurrency" in script


def test_the_cli_turns_telemetry_off_itself() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    probe = ("import os, audiobatch.flows.cli; "
             "print(os.environ['DO_NOT_TRACK'], os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])")
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "false"]


def test_a_run_does_not_pay_for_importing_pandas_yet_pandas_reads_its_outputs(tmp_path) -> None:
    """pyarrow imports pandas (0.3-0.4 s) on its first conversion when pandas is installed;
    a CLI run tells it pandas is absent. Reading the Parquet with pandas still works after."""
    probe = ("import sys, pyarrow as pa, pyarrow.parquet as pq\n"
             "from audiobatch.flows.runtime import spare_pyarrow_its_pandas_probe\n"
             "spare_pyarrow_its_pandas_probe()\n"
             f"pq.write_table(pa.table({{'word': ['ask', 'not']}}), {str(tmp_path / 'w.parquet')!r})\n"
             "print('pandas' in sys.modules)\n"
             "import pandas\n"
             f"print(list(pandas.read_parquet({str(tmp_path / 'w.parquet')!r})['word']))\n")
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["False", "['ask', 'not']"]


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise() -> None:
    """CTranslate2's OpenMP threads spinning between parallel regions made a one-clip job
    2-3x slower on a busy machine; `import audiobatch` asks for passive waiting first."""
    probe = "import os, audiobatch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = functools.partial(subprocess.run, [sys.executable, "-c", probe], capture_output=True,
                            text=True, check=True)
    assert run(env=env).stdout.strip() == "PASSIVE"
    assert run(env={**env, "OMP_WAIT_POLICY": "ACTIVE"}).stdout.strip() == "ACTIVE"


def test_numpy_runs_one_blas_thread_unless_the_user_says_otherwise() -> None:
    """NumPy's OpenBLAS threads spun between the small products they were given and took 30%
    of a QA run's CPU (docs/performance.md); `import audiobatch` asks for one thread. Read
    from OpenBLAS itself, as NumPy loaded it."""
    probe = ("import ctypes, glob, os, audiobatch, numpy\n"
             "lib = glob.glob(os.path.join(os.path.dirname(numpy.__file__) + '.libs', '*openblas*'))\n"
             "print(ctypes.CDLL(lib[0]).scipy_openblas_get_num_threads64_() if lib else 'none')")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = functools.partial(subprocess.run, [sys.executable, "-c", probe], capture_output=True,
                            text=True, check=True)
    found = run(env=env).stdout.strip()
    if found == "none":
        pytest.skip("this NumPy does not bundle OpenBLAS")
    assert found == "1"
    assert run(env={**env, "OPENBLAS_NUM_THREADS": "2"}).stdout.strip() == "2"


def test_estimate_rows_are_named_once_and_only_bad_rows_are_to_fix(tmp_path, capsys) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,audio\n"
                        f"ep01,{SPEECH / 'openai-whisper__jfk.flac'}\n"
                        f"ep02,{SPEECH / 'pocketsphinx__goforward.wav'}\n"
                        "ep03,https://media.example.org/ep03.mp3\n"
                        "ep04-typo,ep04-typo.mp3\n"
                        f"ep05,{ROOT / 'README.md'}\n")
    assert main(["estimate", str(manifest)]) == 0
    out = capsys.readouterr().out
    counted = out.split("not counted")[0]
    assert "audiobatch-local" in counted and "     2 " in counted  # 2 items estimated, not 5
    will_run, to_fix = out.split("not counted (they will run")[1].split("not counted (fix these rows")
    assert "ep03: duration known only once downloaded" in will_run and "ep04" not in will_run
    assert "ep03" not in to_fix
    assert f"ep04-typo: file not found: {tmp_path / 'ep04-typo.mp3'}" in to_fix
    assert "ep04-typo: ep04-typo" not in to_fix and "not a readable audio file" in to_fix  # ep05


def test_estimate_with_neither_kind_of_column_says_so(tmp_path, capsys) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,audo\na,x.wav\n")
    assert main(["estimate", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "no 'audio' column (to transcribe)" in err and "'audo'" in err and "--kind" in err


async def test_a_404_for_the_model_points_at_what_the_endpoint_lists() -> None:
    from audiobatch.localmodel.app import create_app

    settings = ClientSettings(base_url="http://local.test/v1", model="gpt-audio-1.5", max_attempts=1)
    client = ModelClient(settings, transport=httpx.ASGITransport(app=create_app()))
    async with client:
        with pytest.raises(PermanentModelError) as caught:
            await client.transcribe((SPEECH / "pocketsphinx__goforward.wav").read_bytes(), "wav")
    message = str(caught.value)
    assert "GET /v1/models lists the models it serves" in message
    # The list ends the message: the embedded model, then the multilingual one when its extra is in.
    assert "http://local.test/v1/models lists: audiobatch-local" in message
    assert message.rstrip().endswith(("audiobatch-local.", "audiobatch-local-multilingual."))
    assert "use gpt-audio-1.5" not in message and "gpt-audio-1.5 replaces" not in message


def test_log_lines_print_above_the_progress_bar_on_a_terminal(tmp_path) -> None:
    """On a terminal, console log handlers write through rich's proxy while the bar is shown
    (so a log line never lands on the bar's line), and get their stream back after."""
    import pty

    script = tmp_path / "bar.py"
    report = tmp_path / "report.txt"
    script.write_text(
        "import logging, sys\n"
        "from audiobatch.tasks.reports.progress import RunProgress\n"
        "handler = logging.StreamHandler(sys.stderr)\n"
        "logging.getLogger('demo').addHandler(handler)\n"
        "with RunProgress(2, 'transcribe', enabled=True) as bar:\n"
        "    during = handler.stream\n"
        "    logging.getLogger('demo').warning('failed ep01 (row 2): file not found')\n"
        "    bar.item_done(3.0)\n"
        f"open({str(report)!r}, 'w').write(f'{{during is sys.__stderr__}} {{handler.stream is sys.__stderr__}}')\n")
    pid, fd = pty.fork()
    if pid == 0:  # the child runs with a terminal as stdin/stdout/stderr
        os.execve(sys.executable, [sys.executable, str(script)], {**os.environ, "PYTHONPATH": str(ROOT)})
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    assert report.read_text() == "False True"  # rerouted while shown, restored after
    text = output.decode(errors="replace")
    log_line = next(line for line in text.splitlines() if "failed ep01" in line)
    assert "━" not in log_line and "transcribe" not in log_line  # the bar is not on that line


def test_estimate_says_what_qa_reasks_may_add(tmp_path, capsys) -> None:
    """Issue 24: a re-ask is paid like its first request; the estimate names the most they
    can add (one more request per chunk), in text and JSON."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,audio\nep01,{SPEECH / 'openai-whisper__jfk.flac'}\n"
                        f"ep02,{SPEECH / 'pocketsphinx__goforward.wav'}\n")
    priced = ["--model", "gpt-audio-1.5", "--price-as", "gpt-audio-1.5"]
    assert main(["estimate", str(manifest), *priced]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("gpt-audio-1.5"))
    assert f"at most 2 more requests (+{float(row.split()[-1]):.4f} USD)" in out
    assert main(["estimate", str(manifest), *priced, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["reasks_at_most"]["requests"] == 2
    assert document["reasks_at_most"]["cost_usd"] == pytest.approx(document["models"][0]["cost_usd"])
