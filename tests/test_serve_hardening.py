"""`audiobatch serve` holds against its clients: real server processes on 127.0.0.1, real speech.

Every client of the server is untrusted (docs/security.md): what one request may make it
decode or say is capped before the work starts, the queue is bounded, a client that hangs up
stops its work, web pages of other sites are refused, SIGTERM stops it promptly, and it does
not serve other machines without a key.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from audiobatch.flows.cli import main
from audiobatch.tasks.audio import codecs
from tests.helpers.bombs import flac_hours
from tests.helpers.data import ROOT, SPEECH
from tests.helpers.localserver import (free_port, narration_body, openai_error, server_process,
                                       transcription_body)

LONG = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"  # 171 s of LJ Speech
SHORT = (SPEECH / "pocketsphinx__goforward.wav").read_bytes()


def speech_wav(seconds: float) -> bytes:
    """`seconds` of real speech (the LJ recording, repeated as needed) as a 16 kHz wav."""
    samples = codecs.decode(LONG, 16000)
    repeats = int(np.ceil(seconds * 16000 / samples.size))
    return codecs.encode(np.tile(samples, repeats)[: int(seconds * 16000)], 16000, "wav")


def silent_mp3_hours(hours: float) -> bytes:
    """Hours of silence in a few MB: one minute of 8 kbps mp3, repeated (frames stand alone)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=8000)
        stream.layout, stream.bit_rate = "mono", 8000
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000 * 60), dtype=np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue() * round(hours * 60)


def peak_rss_mb(process: subprocess.Popen) -> float:
    status = Path(f"/proc/{process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


BODY_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """A loopback server without a key: 60 s of audio per request, one request waiting at most,
    BODY_TIMEOUT_S for a body to arrive."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with server_process(["--max-audio-s", "60", "--max-queue", "1", "--body-timeout-s", str(BODY_TIMEOUT_S)],
                        log_path=log) as (url, process):
        yield url, process, log


def wait_for_log(log: Path, text: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the server log:\n{log.read_text()[-3000:]}")


def chat(url: str, body: dict | bytes, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/chat/completions", content=content, timeout=120,
                      headers={"content-type": "application/json", **kwargs.pop("headers", {})}, **kwargs)


# --- what one request may ask ------------------------------------------------------------------

def test_hours_of_audio_in_a_small_file_are_refused_before_decoding(served) -> None:
    url, process, _ = served
    before = peak_rss_mb(process)
    mp3 = silent_mp3_hours(3)  # 10.9 MB; decoded whole it would be ~690 MB of samples
    error = openai_error(chat(url, transcription_body(mp3, "mp3")), 400, "audio_too_long")
    assert "at most 60 s of audio per request (--max-audio-s)" in error["message"]
    assert peak_rss_mb(process) - before < 150
    flac = (SPEECH / "openai-whisper__jfk.flac").read_bytes()  # FLAC declared as wav
    error = openai_error(chat(url, transcription_body(flac, "wav")), 400, "invalid_audio")
    assert "says 'wav', but the data is FLAC" in error["message"]
    assert chat(url, transcription_body(SHORT, "wav")).json()["choices"][0]["message"]["content"]


def test_a_1_kb_request_of_hours_is_refused_before_anything_is_decoded(served) -> None:
    """The issue's example: an empty ID3 tag, then FLAC at 8 Hz (159 hours in 962 bytes), sent
    as mp3. The sniff sees ID3; FFmpeg skips the tag and opens FLAC, which states no length;
    each 13-byte frame is 2.3 hours at 16 kHz (main: 277 MiB -> 3.2 GiB)."""
    url, process, _ = served
    before = peak_rss_mb(process)
    bomb = flac_hours(70, id3=True)
    assert len(bomb) < 1024
    error = openai_error(chat(url, transcription_body(bomb, "mp3")), 400, "invalid_audio")
    assert "said to be mp3, but the data opens as flac" in error["message"]
    assert peak_rss_mb(process) - before < 50
    assert chat(url, transcription_body(SHORT, "wav")).status_code == 200


def test_text_and_json_beyond_the_limits_are_400(served) -> None:
    url, _, _ = served
    error = openai_error(chat(url, narration_body("All work and no play. " * 2000, "wav")), 400,
                         "text_too_long")
    assert "(--max-text-chars)" in error["message"]
    for body in (b"[" * 200_000 + b"]" * 200_000, b'{"model": "audiobatch-local", "messages": [',
                 b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        openai_error(chat(url, body), 400, "invalid_json")
    assert chat(url, transcription_body(SHORT, "wav")).status_code == 200  # still serving


def test_a_full_queue_answers_429_with_retry_after(served) -> None:
    url, _, log = served
    body = json.dumps(transcription_body(speech_wav(55), "wav")).encode()

    async def third_of_three() -> tuple[httpx.Response, list[asyncio.Task]]:
        async with httpx.AsyncClient(timeout=300) as client:
            def send() -> asyncio.Task:
                return asyncio.ensure_future(client.post(f"{url}/chat/completions", content=body,
                                                         headers={"content-type": "application/json"}))
            working = [send(), send()]  # one worked on, one waiting (--max-queue 1)
            await asyncio.sleep(1.0)
            third = await send()
            assert not any(task.done() for task in working)  # both admitted, still at work
            for task in working:  # hang up: their work stops
                task.cancel()
            await asyncio.gather(*working, return_exceptions=True)
            return third

    refused = asyncio.run(third_of_three())
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    deadline = time.monotonic() + 60
    while log.read_text().count("the client went away") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.read_text().count("the client went away") >= 2


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends before it closes the connection (it answers 408, then closes)."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_clients_that_send_a_head_and_never_the_body_lose_their_place(served) -> None:
    """Each request holds a place in the queue from its arrival; two that never send their
    body held both places (main: every other client got 429 for 90 s). They get 408 after
    --body-timeout-s and the places are free again."""
    url, _, log = served
    port = int(url.split(":")[2].split("/")[0])
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{\"model\": " % port)
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        for connection in stalled:
            connection.sendall(head)
        time.sleep(1.0)
        refused = chat(url, transcription_body(SHORT, "wav"))
        assert refused.status_code == 429  # both places are taken, by clients sending nothing
        for connection in stalled:
            connection.settimeout(BODY_TIMEOUT_S + 30)
            answer = read_until_closed(connection)  # the head and body may come in two reads
            assert answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer
            assert b"(--body-timeout-s)" in answer
    finally:
        for connection in stalled:
            connection.close()
    assert chat(url, transcription_body(SHORT, "wav")).status_code == 200


def test_a_client_that_hangs_up_stops_its_work(served) -> None:
    url, _, log = served
    with pytest.raises(httpx.TimeoutException):  # the client gives up and closes the connection
        httpx.post(f"{url}/chat/completions", json=transcription_body(speech_wav(55), "wav"), timeout=1.5)
    wait_for_log(log, "the client went away; its work was stopped")
    wait_for_log(log, "inference stopped: nobody waits for its answer")
    assert chat(url, transcription_body(SHORT, "wav")).status_code == 200


# --- who may ask -------------------------------------------------------------------------------

def test_web_pages_of_other_sites_are_refused(served) -> None:
    """DNS rebinding: a page whose own name now points at 127.0.0.1 sends its own Host."""
    url, _, _ = served
    port = url.split(":")[2].split("/")[0]
    models = f"{url}/models"
    error = openai_error(httpx.get(models, headers={"Host": f"attacker.example:{port}"}), 403, "forbidden_host")
    assert "attacker.example" in error["message"]
    openai_error(httpx.get(models, headers={"Origin": "https://attacker.example"}), 403, "forbidden_origin")
    openai_error(chat(url, transcription_body(SHORT, "wav"), headers={"Origin": "null"}), 403,
                 "forbidden_origin")
    assert httpx.get(models, headers={"Host": f"localhost:{port}"}).status_code == 200
    assert httpx.get(models, headers={"Origin": f"http://127.0.0.1:{port}"}).status_code == 200


def test_other_machines_are_served_only_with_a_key(tmp_path, capsys) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 2
    error = capsys.readouterr().err
    assert "without an API key" in error and "--api-key" in error and "--insecure-no-auth" in error
    done = subprocess.run([sys.executable, "-m", "audiobatch.localmodel.server", "--host", "0.0.0.0",
                           "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to serve on 0.0.0.0" in done.stderr
    with server_process(["--host", "0.0.0.0", "--insecure-no-auth"]) as (url, _):
        assert httpx.get(f"{url}/models").status_code == 200


# --- stopping ----------------------------------------------------------------------------------

def test_sigterm_stops_the_server_while_it_works(tmp_path) -> None:
    log = tmp_path / "server.log"
    body = json.dumps(transcription_body(speech_wav(600), "wav")).encode()  # ~1 min of inference
    with server_process(["--max-audio-s", "700"], log_path=log) as (url, process):
        client = subprocess.Popen([sys.executable, "-c", "import httpx, sys; httpx.post(sys.argv[1], "
                                   "content=sys.stdin.buffer.read(), timeout=600, headers="
                                   "{'content-type': 'application/json'})", f"{url}/chat/completions"],
                                  stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        client.stdin.write(body)
        client.stdin.close()
        wait_for_log(log, "600.0 s of audio")  # decoded: the engine is at work
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # without the shutdown deadline it waits for the transcription
        assert client.wait(timeout=30) != 0  # the request was cut off, not answered
