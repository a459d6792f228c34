"""What each Parquet dataset and column means, for the generated Outputs reference.

The datasets and columns themselves, with their types, come from the code
(`audiobatch.tasks.outputs.datasets.SCHEMAS`); only their meaning is written here. A column the
code has and this file does not describe still appears (marked "not described yet"); a note
for a column the code no longer has fails the docs build.
"""
from __future__ import annotations

# dataset -> what one row stands for
ROW_OF: dict[str, str] = {
    "items": "manifest row (or podcast episode) per run: every row ends in exactly one",
    "transcripts": "transcribed item",
    "segments": "caption segment of a transcript",
    "words": "transcribed word (forced alignment, on the recording's timeline)",
    "speakers": "speaker of a transcribed item (with `--speakers`)",
    "narrations": "narrated item",
    "narration_checks": "take of a narrated chunk, heard back",
    "costs": "request attempt (failed ones, re-asks and cache hits included)",
    "chapters": "chapter of a transcribed item (`--chapters`)",
    "show_notes": "transcribed item with `--chapters`",
    "sponsor_spots": "sponsor read found in a transcribed item (`--chapters`)",
}

# columns that mean the same in every dataset that has them
SHARED: dict[str, str] = {
    "run_id": "the run; its media live under `media/<kind>/<run_id>/`",
    "item_id": "the item's id (the manifest's `id`, derived when blank; see Manifests)",
    "chunk_index": "which chunk (request) of the item, from 0",
    "model": "the model id that answered",
    "source": "where the input came from: a path or a URL, credentials masked",
    "duration_s": "seconds of audio",
    "n_chunks": "requests the item was cut into",
    "error_type": "the error's class (`InputError`, `PermanentError`...), empty when ok",
    "error_message": "what went wrong and what to do, naming the item; never a secret",
    "qa_flags": "what a check could not fix (e.g. `chunk 3: loop`); empty when clean",
    "text": "the text",
    "txt_path": "the `.txt` file beside the media",
    "srt_path": "the `.srt` captions",
    "vtt_path": "the `.vtt` captions",
    "speaker": "who speaks (`SPEAKER_1`, `SPEAKER_2`... numbered in order of first words; "
               "empty without `--speakers`)",
    # podcast episodes (empty for manifest rows)
    "feed_title": "podcast: the feed's title",
    "episode_title": "podcast: the episode's title",
    "episode_guid": "podcast: the episode's GUID (Atom: its id; else its enclosure URL)",
    "published_at": "podcast: when the episode was published (ISO 8601, UTC)",
    "enclosure_url": "podcast: the episode's audio URL, tokens masked",
}

# dataset -> column -> meaning (wins over SHARED)
COLUMNS: dict[str, dict[str, str]] = {
    "items": {
        "kind": "`transcribe` or `narrate`",
        "source": "the audio path or URL (transcription), the text file or `inline` (narration); credentials masked",
        "status": "`ok`, `failed` or `skipped` (a run-fatal error stopped new work)",
        "row": "the manifest line (the header is line 1)",
        "duration_s": "seconds of audio in (transcription) or out (narration)",
        "requests": "requests sent for the item (re-asks and retakes included)",
        "cost_usd": "the item's dollars, all attempts",
        "started_at": "when the item started (UTC)",
        "finished_at": "when it ended (UTC): the latest `ok` row of an id is its current output",
        "metadata": "the manifest's other columns as JSON (podcast: `duration_s` the feed states, "
                    "`feed_url`, the shipped transcript's URL and type)",
        "skipped_audio_s": "transcription: seconds of damaged audio stepped over (see Reliability)",
        "skipped_bytes": "transcription: bytes of junk or refused packets skipped",
        "repaired_samples": "transcription: NaN or infinite samples made silent",
    },
    "transcripts": {
        "source": "the audio, or for a podcast episode with a shipped transcript that transcript's URL",
        "duration_s": "the audio's measured duration",
        "text": "the whole transcript",
        "language": "the language asked, or the one detected",
        "language_probability": "how sure the model's language detection was (when it detected it)",
        "model": "the model (empty for a transcript the feed shipped)",
        "origin": "`model`, or `feed` for a transcript the podcast feed shipped",
        "json_path": "the Whisper-shaped `.json` (text, language, segments with words)",
        "qa_flags": "what transcript QA could not fix (e.g. `chunk 3: loop`); empty when clean",
        "vocabulary_fixes": "near misses of the vocabulary's terms corrected "
                            "(`chunk 0: 'Lewellyn' -> 'Llewellyn'`)",
        "rttm_path": "with `--speakers`: the `.rttm` file of who spoke when (see Speakers)",
    },
    "segments": {
        "segment_index": "the segment's place in the item",
        "start_s": "start, seconds on the recording's timeline",
        "end_s": "end, seconds on the recording's timeline",
        "text": "the caption's text",
        "qa_flags": "the flags of the segment's chunk",
    },
    "words": {
        "word_index": "the word's place in its chunk",
        "word": "the word as the transcript spells it",
        "start_s": "start, seconds on the recording's timeline",
        "end_s": "end, seconds on the recording's timeline",
        "probability": "the aligner's confidence",
    },
    "speakers": {
        "seconds": "seconds this speaker speaks (overlapping speech counts for each speaker)",
        "turns": "the speaker's turns (stretches of speech without another speaker between)",
        "first_s": "when the speaker is first heard, seconds on the recording's timeline",
    },
    "narrations": {
        "audio_path": "the audio file",
        "format": "`wav`, `mp3`, `flac`, `opus` or `m4b`",
        "voice": "the voice asked",
        "speed": "the speed applied (0.25-4.0; pitch kept)",
        "duration_s": "seconds of the audio file",
        "title": "the title tag",
        "words": "words of the speakable text",
        "loudness_lufs": "the file's integrated loudness",
        "chapters": "chapter marks (m4b) or chapters read",
        "audio_bytes": "the file's size",
        "txt_path": "the text as said (the speakable text)",
        "srt_path": "exact captions (`.srt`): the text's own words, aligned to the audio",
        "vtt_path": "exact captions (`.vtt`)",
        "qa_flags": "what verification could not fix (a chunk kept after its last take, a language "
                    "not verified); empty when clean",
        "chapters_path": "an audiobook of several chapters: its Podcasting 2.0 chapters file",
    },
    "narration_checks": {
        "attempt": "the take, from 1",
        "wer": "word error rate of what was heard against the text",
        "passed": "whether the take passed (WER at most the threshold, no run of 4 unheard words)",
        "heard": "what the embedded Whisper heard",
    },
    "costs": {
        "attempt": "the attempt, from 1 (a QA re-ask is numbered after the first)",
        "provider": "the price table used (the base URL's host, or `--provider`)",
        "priced_as": "the model whose prices were used (`--price-as`), else empty",
        "prompt_text_tokens": "text tokens in",
        "prompt_audio_tokens": "audio tokens in",
        "completion_text_tokens": "text tokens out",
        "completion_audio_tokens": "audio tokens out",
        "cached_tokens": "prompt tokens the provider served from its cache",
        "cost_usd": "dollars for this attempt (0 for a cache hit; empty when unknown)",
        "latency_s": "seconds from sending to the whole answer",
        "http_status": "the answer's HTTP status (empty when none came)",
        "request_id": "the provider's `x-request-id`",
        "cached": "answered by audiobatch's result cache (no request, $0)",
        "reask_reason": "why transcript QA asked again (empty for a first attempt)",
        "recorded_audio_s": "transcription: seconds of the recording the request stands for",
        "sent_audio_s": "transcription: seconds it sent (fewer with `--economy`)",
        "saved_usd": "transcription: the unsent seconds priced as audio in",
        "request_kind": "what the request was for: `transcribe`, `narrate` or `chapters`",
    },
    "chapters": {
        "chapter_index": "the chapter's place in the item, from 0",
        "start_s": "start, seconds on the recording's timeline",
        "end_s": "end, seconds on the recording's timeline",
        "title": "the chapter's title (a model's, checked, or YAKE's key phrase)",
        "summary": "a sentence or two on the chapter",
        "method": "`model`, `model-reask`, `offline` or `offline-fallback` (see Chapters)",
        "model": "the model that made them (empty offline)",
    },
    "show_notes": {
        "summary": "the episode's summary",
        "keywords": "key words and phrases (list)",
        "n_chapters": "chapters found",
        "n_sponsor_spots": "sponsor reads found",
        "method": "`model`, `model-reask`, `offline` or `offline-fallback` (see Chapters)",
        "model": "the model that made them (empty offline)",
        "problems": "why a model's answer was asked again or not used (list)",
        "chapters_path": "the item's Podcasting 2.0 chapters file (`<item_id>.chapters.json`)",
    },
    "sponsor_spots": {
        "spot_index": "the read's place in the item, from 0",
        "start_s": "start, seconds on the recording's timeline",
        "end_s": "end, seconds on the recording's timeline",
        "sponsor": "the sponsor's name when the read says it, else empty",
        "method": "`model`, `model-reask`, `offline` or `offline-fallback` (see Chapters)",
    },
}


def meaning(dataset: str, column: str) -> str | None:
    return COLUMNS.get(dataset, {}).get(column) or SHARED.get(column)
