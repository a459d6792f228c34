"""Chapters, show notes and sponsor spots made offline (tasks/extract), and the checks a model's
tool call must pass (tasks/extract/tool.py).

The offline tests run on the topic texts of tests/helpers/episode.py timed as if read aloud
(no audio: the real episode is tests/test_chapters_tool.py's and benchmarks/chapters.py's);
the checks get the hostile arguments a model could send."""
from __future__ import annotations

import json

import pytest

from audiobatch.tasks.captions.files import render_chapters_json
from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.extract.notes import MAX_TITLE_CHARS, xml_text
from audiobatch.tasks.extract.offline import offline_notes
from audiobatch.tasks.extract.sentences import timed_sentences
from audiobatch.tasks.extract.tool import TOOL_NAME, checked_notes, max_chapters, tool_definition
from tests.helpers.episode import keywords_of, text_segments

TOLERANCE_S = 15.0


def on_topic(title: str, topic: str) -> bool:
    return bool({w.strip(".,'").lower() for w in title.split()} & keywords_of(topic))


def test_unrelated_topics_get_a_chapter_each_starting_near_the_change_and_titled_on_it() -> None:
    parts = ["bees", "volcanoes", "sourdough", "chess", "marathons"]
    segments, starts, duration = text_segments(parts)
    notes = offline_notes(segments, duration, "en")
    chapter_starts = [c.start_s for c in notes.chapters]
    assert notes.method == "offline" and notes.model is None
    for change in starts[1:]:
        assert min(abs(change - s) for s in chapter_starts) <= TOLERANCE_S, (change, chapter_starts)
    assert len(notes.chapters) == len(parts)  # no extra chapters inside a topic
    for chapter, topic in zip(notes.chapters, parts):
        assert on_topic(chapter.title, topic), (chapter.title, topic)
        assert on_topic(chapter.summary, topic)  # an extractive summary: a sentence of that topic
    assert notes.chapters[0].start_s == 0 and notes.chapters[-1].end_s == duration
    assert all(a.end_s == b.start_s for a, b in zip(notes.chapters, notes.chapters[1:]))
    assert 5 <= len(notes.keywords) <= 10 and notes.summary


def test_one_topic_is_one_chapter() -> None:
    segments, _, duration = text_segments(["sourdough"])
    notes = offline_notes(segments, duration, "en")
    assert len(notes.chapters) == 1 and on_topic(notes.chapters[0].title, "sourdough")


def test_a_sponsor_read_is_found_by_its_wording_and_kept_out_of_the_notes() -> None:
    segments, starts, duration = text_segments(["bees", "sponsor", "chess"])
    notes = offline_notes(segments, duration, "en")
    [spot] = notes.sponsor_spots
    read_end = starts[2]
    assert abs(spot.start_s - starts[1]) < 6 and abs(spot.end_s - read_end) < 6, (spot, starts)
    assert spot.sponsor == "Northwind Coffee"
    assert not any("northwind" in k or "coffee" in k for k in notes.keywords)
    assert all("Northwind" not in c.title and "Northwind" not in c.summary for c in notes.chapters)


def test_nothing_said_gives_no_chapters() -> None:
    notes = offline_notes([], 30.0, "en")
    assert notes.chapters == () and notes.sponsor_spots == () and notes.summary == ""


def test_sentences_take_their_times_from_aligned_words_and_know_the_pause_before() -> None:
    words = [Word(" Bees", 1.0, 1.3, 0.9), Word(" dance.", 1.3, 1.8, 0.9),
             Word(" Lava", 3.0, 3.4, 0.9), Word(" flows.", 3.4, 4.0, 0.9)]
    segments = [Segment(0, 1.0, 1.8, "Bees dance.", tuple(words[:2])),
                Segment(0, 3.0, 4.0, "Lava flows.", tuple(words[2:]))]
    first, second = timed_sentences(segments, "en")
    assert (first.start_s, first.end_s, first.text) == (1.0, 1.8, "Bees dance.")
    assert (second.start_s, second.pause_before_s) == (3.0, 1.2)


def test_the_chapters_file_is_podcasting_2_json_chapters() -> None:
    document = json.loads(render_chapters_json([(0.0, 61.234, "Honey Bees"), (61.234, 120.0, "Lava")]))
    assert document["version"] == "1.2.0"
    assert document["chapters"] == [{"startTime": 0.0, "endTime": 61.23, "title": "Honey Bees"},
                                    {"startTime": 61.23, "endTime": 120.0, "title": "Lava"}]


# --- a model's tool call: hostile until checked ----------------------------------------------

GOOD = {"chapters": [{"start_s": 0, "end_s": 61.5, "title": "Honey bees", "summary": "How a hive works."},
                     {"start_s": 61.5, "end_s": 130, "title": "Volcanoes", "summary": "Where magma rises."}],
        "summary": "Bees, then volcanoes.", "keywords": ["bees", "volcanoes"],
        "sponsor_spots": [{"start_s": 50, "end_s": 60, "sponsor": "Northwind Coffee"}]}


def check(arguments: object, name: str | None = TOOL_NAME, duration_s: float = 130.0):
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return checked_notes(name, text, duration_s, "gpt-audio-1.5", "model")


def with_chapter(**changes: object) -> dict:
    return {**GOOD, "chapters": [GOOD["chapters"][0], {**GOOD["chapters"][1], **changes}]}


def test_a_good_call_becomes_notes() -> None:
    notes, problems = check(GOOD)
    assert problems == [] and notes is not None
    assert [(c.start_s, c.end_s, c.title) for c in notes.chapters] == [(0, 61.5, "Honey bees"),
                                                                       (61.5, 130, "Volcanoes")]
    assert notes.sponsor_spots[0].sponsor == "Northwind Coffee" and notes.model == "gpt-audio-1.5"


@pytest.mark.parametrize("arguments, name, problem", [
    (GOOD, None, "did not call"),
    (GOOD, "delete_everything", "not record_episode_notes"),
    ("{\"chapters\": [", TOOL_NAME, "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, TOOL_NAME, "not valid JSON"),  # nested past the parser's depth
    ("x" * 200_001, TOOL_NAME, "at most 200,000 characters"),
    ([1, 2], TOOL_NAME, "not a JSON object"),
    ({**GOOD, "chapters": []}, TOOL_NAME, "list of 1 to 6"),
    ({**GOOD, "chapters": [GOOD["chapters"][0]] * 100}, TOOL_NAME, "list of 1 to 6"),
    ({**GOOD, "chapters": [GOOD["chapters"][0]] * 10_000}, TOOL_NAME, "at most 200,000 characters"),
    (with_chapter(end_s=500), TOOL_NAME, "not inside the episode"),
    (with_chapter(start_s=-5), TOOL_NAME, "not inside the episode"),
    (with_chapter(start_s=80, end_s=70), TOOL_NAME, "not inside the episode"),
    (with_chapter(start_s=10), TOOL_NAME, "chapters go in order"),
    (with_chapter(start_s="61.5"), TOOL_NAME, "no numeric start_s"),
    (with_chapter(start_s=True), TOOL_NAME, "no numeric start_s"),
    ('{"chapters": [{"start_s": NaN, "end_s": 1, "title": "t", "summary": ""}], "summary": "",'
     ' "keywords": [], "sponsor_spots": []}', TOOL_NAME, "no numeric start_s"),
    (with_chapter(title="x" * (MAX_TITLE_CHARS + 1)), TOOL_NAME, "81 characters"),
    (with_chapter(title=" \x00\x1b "), TOOL_NAME, "0 characters"),
    ({**GOOD, "keywords": "bees"}, TOOL_NAME, "keywords must be a list"),
    ({**GOOD, "summary": None}, TOOL_NAME, "summary is not a string"),
    ({**GOOD, "sponsor_spots": [{"start_s": 1, "end_s": 2, "sponsor": None}] * 21}, TOOL_NAME,
     "at most 20"),
    ({**GOOD, "sponsor_spots": [{"start_s": 120, "end_s": 9999, "sponsor": "x"}]}, TOOL_NAME,
     "sponsor spot 1"),
])
def test_a_bad_call_is_refused_saying_why(arguments: object, name: str | None, problem: str) -> None:
    notes, problems = check(arguments, name)
    assert notes is None and any(problem in p for p in problems), problems
    assert all(len(p) < 400 for p in problems)  # the model's text is never quoted at length


def test_model_text_is_made_valid_xml_and_cut_to_its_limits() -> None:
    hostile = "Bees\x00\x08 <script>alert(1)</script>\ud800\n\nand &amp; wax\ufffe"
    notes, problems = check({**with_chapter(title=hostile), "summary": "S" * 5000,
                             "keywords": [hostile, hostile, "k" * 500] + [f"k{i}" for i in range(50)],
                             "sponsor_spots": [{"start_s": 1, "end_s": 2, "sponsor": hostile * 20}]})
    assert problems == [] and notes is not None
    title = notes.chapters[1].title
    assert title == "Bees <script>alert(1)</script> and &amp; wax"  # text, escaped where shown
    for text in [title, notes.summary, *notes.keywords, notes.sponsor_spots[0].sponsor]:
        assert text == xml_text(text) and len(text) <= 1200
    assert len(notes.keywords) == 12 and len(notes.keywords[1]) <= 60  # deduplicated, capped
    assert len(notes.sponsor_spots[0].sponsor) <= 80


def test_the_count_of_chapters_is_bounded_by_the_length() -> None:
    assert max_chapters(30) == 1 and max_chapters(130) == 6 and max_chapters(36_000) == 50


def test_the_tool_schema_is_strict() -> None:
    """OpenAI's strict mode: every object lists all its properties as required, and no others."""
    def objects(schema: dict) -> list[dict]:
        found = [schema] if schema.get("type") == "object" else []
        for value in schema.get("properties", {}).values():
            found += objects(value)
        return found + (objects(schema["items"]) if "items" in schema else [])

    definition = tool_definition()
    assert definition["name"] == TOOL_NAME
    for schema in objects(definition["parameters"]):
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == set(schema["properties"])


@pytest.mark.parametrize("typed, chosen", [([], "off"), (["--chapters"], "auto"),
                                           (["--chapters", "offline"], "offline")])
def test_the_command_line_flag_becomes_the_flow_option(typed: list[str], chosen: str) -> None:
    from audiobatch.flows.cli import build_parser
    from audiobatch.flows.cli_args import flow_kwargs
    from audiobatch.tasks.options import TranscribeOptions

    for command in (["transcribe", "m.csv"], ["podcast", "https://example.org/feed.xml"]):
        args = build_parser().parse_args([*command, *typed])
        assert flow_kwargs(args, TranscribeOptions)["options"].transcription.chapters == chosen


# --- the embedded model answers the notes tool, honestly -------------------------------------

async def test_the_served_embedded_model_answers_the_notes_tool_by_the_offline_method() -> None:
    """Its reply names the offline method as its model; a transcript far over the served text
    limit still fits a notes request; another tool, or narration-sized text, is refused."""
    import httpx

    from audiobatch.localmodel.app import create_app
    from audiobatch.localmodel.chat import OFFLINE_NOTES_MODEL
    from audiobatch.localmodel.serving import ServeLimits
    from audiobatch.tasks.extract.tool import transcript_lines
    from audiobatch.tasks.model.prompts import notes_messages

    segments, starts, duration = text_segments(["bees", "volcanoes", "chess", "marathons", "printing"])
    limits = ServeLimits.defaults()
    lines = transcript_lines(segments)
    assert len(lines) > limits.max_text_chars
    tool = {"type": "function", "function": {**tool_definition(), "strict": True}}
    body = {"model": "audiobatch-local", "messages": notes_messages(lines, duration), "tools": [tool]}
    transport = httpx.ASGITransport(app=create_app(limits=limits))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1/v1") as client:
        reply = (await client.post("chat/completions", json=body)).json()
        shell = {"type": "function", "function": {"name": "run_shell", "parameters": {}}}
        other = {**body, "tools": [shell]}
        refused = await client.post("chat/completions", json=other)
        spoken = await client.post("chat/completions", json={
            "model": "audiobatch-local", "modalities": ["text", "audio"],
            "audio": {"voice": "a", "format": "wav"}, "messages": [{"role": "user", "content": lines}]})
    assert reply["model"] == OFFLINE_NOTES_MODEL
    [call] = reply["choices"][0]["message"]["tool_calls"]
    notes, problems = checked_notes(call["function"]["name"], call["function"]["arguments"], duration,
                                    reply["model"], "model")
    assert problems == [] and len(notes.chapters) == 5
    assert all(min(abs(c - s.start_s) for s in notes.chapters) <= TOLERANCE_S for c in starts[1:])
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_tool"
    assert spoken.status_code == 400 and spoken.json()["error"]["code"] == "text_too_long"


@pytest.mark.parametrize("arguments, expected", [
    ('{"a": 1}', '{"a": 1}'), ({"a": 1}, '{"a": 1}'),  # text, or the object some gateways send
    (42, ""), ("x" * 300_000, "x" * 200_001)])  # not text: nothing; too long: cut, then refused
def test_the_reply_s_first_function_call_is_read_as_text(arguments: object, expected: str) -> None:
    import httpx

    from audiobatch.tasks.model.wire import parse_reply

    message = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "web_search"}, {"id": "c", "type": "function", "function": {"name": TOOL_NAME,
                                                                           "arguments": arguments}}]}
    body = {"model": "m", "choices": [{"message": message, "finish_reason": "tool_calls"}], "usage": {}}
    reply = parse_reply(httpx.Response(200, json=body), "http://x/v1", model="m", want_audio=False,
                        audio_format=None)
    assert (reply.tool_name, reply.tool_arguments) == (TOOL_NAME, expected)


HOSTILE_TEXTS = {"one-letter sentences": "a. " * 20000, "one long word": "x" * 200_000,
                 "abbreviations": "Mr. Dr. St. Jr. e.g. i.e. " * 5000, "dots": "..." * 30000 + " end",
                 "markup": "<b>\x00\ud800 &amp; " * 10000}


@pytest.mark.timeout(300)  # a guard against time growing with the square of the text, not a benchmark
@pytest.mark.parametrize("name", HOSTILE_TEXTS)
def test_a_hostile_transcript_gets_bounded_notes_in_bounded_time(name: str) -> None:
    """A feed's shipped transcript is the feed's: text that makes sentence splitting, key
    phrases or the similarity curve slow (pysbd took over a minute on 20,000 "a." before the
    text was cut in pieces) or that carries markup and control characters."""
    words = HOSTILE_TEXTS[name].split() or [HOSTILE_TEXTS[name]]
    segments = [Segment(0, i * 5.0, i * 5.0 + 4.9, " ".join(words[i * 12:(i + 1) * 12]))
                for i in range(max(1, len(words) // 12))]
    notes = offline_notes(segments, len(segments) * 5.0, "en")
    assert 1 <= len(notes.chapters) <= 40
    for text in [notes.summary, *notes.keywords, *(c.title for c in notes.chapters)]:
        assert text == xml_text(text)
    assert all(len(c.title) <= MAX_TITLE_CHARS for c in notes.chapters)
