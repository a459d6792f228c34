"""Narration in scripts written without spaces: character-based request sizes and sentence ends,
and a clear per-item error when the embedded voice cannot speak the text's language."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from audiobatch.tasks.model.profiles import get_profile
from audiobatch.tasks.text.speakable import (max_words_per_request, speakable_text, split_for_narration,
                                             spoken_words, text_language)
from tests.helpers.e2e import run_narrate, write_manifest
from tests.helpers.faultserver import FaultServer

# Ten sentences of plain Chinese prose (what a newsroom article reads like), repeated with the
# paragraph number so that no two paragraphs are identical: ~6,400 characters, no spaces.
_SENTENCES = [
    "今天早上，城市图书馆宣布将延长周末的开放时间。",
    "馆长表示，这项决定是根据读者的意见做出的！",
    "许多学生希望在考试前有更多安静的学习空间。",
    "图书馆还计划增加一批新的电子阅读设备，方便老年读者使用。",
    "你知道吗？去年的借阅量比前年增加了三成。",
    "工作人员说，最受欢迎的是历史和科学类的书籍。",
    "为了迎接更多的读者，馆内的座位也将重新安排；儿童区会扩大一倍。",
    "一些市民在网上留言，称赞这是一件好事。",
    "也有人担心，延长时间会增加管理的成本。",
    "对此，馆方回应说，新的志愿者项目可以解决这个问题。",
]
CHINESE = "\n\n".join(f"第{n}段。" + "".join(_SENTENCES) for n in range(1, 30))
SENTENCE_ENDS = ("。", "！", "？", "!", "?")
HAN = re.compile("[\u4e00-\u9fff]")


def test_chinese_is_counted_and_cut_per_character_at_sentence_ends() -> None:
    assert 6000 <= len(CHINESE) <= 7000 and " " not in CHINESE
    limit = max_words_per_request(4096, 20, 160)  # gpt-audio-1.5's budget: 464 English words
    chunks = split_for_narration(CHINESE, limit)
    # 2/3 of a word per character: ~696 characters (about 2.9 minutes read aloud) per request
    assert all(spoken_words(chunk) <= limit for chunk in chunks)
    assert all(len(HAN.findall(chunk)) <= limit * 1.5 for chunk in chunks)
    assert len(chunks) == pytest.approx(spoken_words(CHINESE) / limit, abs=2)
    assert all(chunk.endswith(SENTENCE_ENDS) for chunk in chunks)  # never inside a sentence
    assert "".join(chunks).replace("\n", "") == CHINESE.replace("\n", "")


def test_mixed_and_unpunctuated_text_still_fits() -> None:
    mixed = "我们使用 Prefect 和 Python 来处理音频。" * 40 + "没有标点的长句子" * 200
    chunks = split_for_narration(mixed, 50)
    assert all(spoken_words(chunk) <= 50 for chunk in chunks)
    assert "".join("".join(chunks).split()) == "".join(mixed.split())
    assert all(chunk.endswith("。") for chunk in chunks if "没有" not in chunk)
    japanese = "今日は良い天気ですね。散歩に行きましょうか？" * 30
    assert all(spoken_words(c) <= 20 for c in split_for_narration(japanese, 20))
    assert [text_language(t) for t in (CHINESE, japanese, "Привет, мир.", "Hello.")] == \
        ["zh", "ja", "ru", "en"]


@pytest.mark.usefixtures("prefect_api")
async def test_embedded_voice_refuses_chinese_per_item_and_a_remote_model_gets_sized_requests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"id": "zh", "text": CHINESE}, {"id": "en", "text": "A short English line."},
            {"id": "fr", "text": "Bonjour tout le monde.", "language": "fr"}]
    manifest = write_manifest(tmp_path / "m.csv", rows)

    # The embedded model: its one voice speaks English; the others fail per item, at no cost.
    local = await run_narrate(manifest, tmp_path / "local", audio_format="wav")
    assert local.statuses() == {"zh": "failed", "en": "ok", "fr": "failed"}
    message = local.item("zh")["error_message"]
    assert "zh (Han script)" in message and "speaks only en" in message and "--base-url" in message
    assert "fr (Latin script)" in local.item("fr")["error_message"]
    assert set(local.dataset("costs")["item_id"]) == {"en"}

    # A remote model (a stand-in on 127.0.0.1 answering each request with a tone; a real
    # endpoint cannot run here) speaks any language: the text goes out in requests that fit.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-stand-in")
    with FaultServer() as server:
        remote = await run_narrate(manifest, tmp_path / "remote", audio_format="wav",
                                   base_url=server.base_url, model="gpt-audio-1.5")
    assert set(remote.statuses().values()) == {"ok"}
    texts = [r.json["messages"][-1]["content"] for r in server.requests
             if r.path.endswith("/chat/completions")]
    chinese = [t for t in texts if HAN.search(t)]
    profile = get_profile("gpt-audio-1.5")
    limit = max_words_per_request(profile.max_output_audio_tokens,
                                  profile.output_audio_tokens_per_s, profile.words_per_minute)
    assert len(chinese) == remote.item("zh", "narrations")["n_chunks"] >= 8
    assert all(spoken_words(t) <= limit and t.endswith(SENTENCE_ENDS) for t in chinese)
    # requests overlap, so they arrive in any order: together they are the text, cut as above
    assert sorted(chinese) == sorted(split_for_narration(speakable_text(CHINESE, markdown=False), limit))
