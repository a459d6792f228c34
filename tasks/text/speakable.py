"""Narration text: raw .txt / Markdown -> speakable text -> chunks that fit one request.

A narration request may return at most `max_output_audio_tokens` of audio, so the text sent in
one request is capped in words (`max_words_per_request`). `split_for_narration` cuts at the
strongest boundary available - paragraph, then sentence, then clause, then between words -
and packs small pieces together so that no request is wasted on a scrap of text.

Decisions a reader should know:
- Numbers, money and titles are left as written: the TTS engine expands them. What voices
  misread (Latin and degree abbreviations, year ranges, URLs) is rewritten by tasks/text/spoken.py.
- Bare URLs are reduced to their domain ("https://example.com/a/b" -> "example.com"): a
  listener cannot use a path, and engines read slashes and query strings badly. Emails are kept.
- Markdown code (fenced or indented blocks) is dropped: read aloud it is noise. Inline `code`
  is kept as plain words. Images are dropped; links keep their text; HTML tags are removed.
- List markers are dropped and each list item / heading / table row becomes a sentence.
- Chunks are slices of the input, so joining them with spaces gives the input back, word for
  word. Boundaries are always at whitespace: no word is ever cut.
- Scripts written without spaces (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) are
  counted and cut per character, each weighted by how long it takes to say; `。！？` end
  sentences, `，、；：` clauses (tasks/text/cjk.py). A 6,400-character Chinese text is ~4,300
  word-equivalents.
"""
from __future__ import annotations

import html
import math
import re
import unicodedata

from markdown_it import MarkdownIt
from markdown_it.token import Token

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.text.cjk import CJK_CLAUSE_END, CJK_CLOSERS, CJK_SENTENCE_END, WORD_TOKEN, token_weight
from audiobatch.tasks.text.spoken import spoken_forms

# --- counting and budgets ---------------------------------------------------------------

def count_words(text: str) -> int:
    """Words as the splitter counts them: whitespace-separated tokens, and each character of a
    script written without spaces."""
    return len(WORD_TOKEN.findall(text))


def spoken_words(text: str) -> float:
    """How long `text` takes to say, in English words: what the speaking rates are measured in."""
    return sum(token_weight(token) for token in WORD_TOKEN.findall(text))


def max_words_per_request(max_output_audio_tokens: int, tokens_per_s: float,
                          words_per_minute: float, margin: float = 0.85) -> int:
    """Words whose narration fits in one request's audio-token budget, with a safety margin.

    4096 tokens at 20/s is 204.8 s of audio; at 160 words/min and margin 0.85 that is 464 words.
    The margin absorbs slow passages (long words, numbers spoken out, pauses).
    """
    if tokens_per_s <= 0 or words_per_minute <= 0 or not 0 < margin <= 1:
        raise ConfigError(f"cannot size narration requests from tokens_per_s={tokens_per_s}, "
                          f"words_per_minute={words_per_minute}, margin={margin}: "
                          "fix the model profile (all must be positive, margin at most 1).")
    seconds = max_output_audio_tokens / tokens_per_s
    words = math.floor(seconds * margin * words_per_minute / 60.0)
    if words < 1:
        raise ConfigError(f"max_output_audio_tokens={max_output_audio_tokens} leaves room for "
                          "less than one word of narration per request; raise the budget "
                          "(--max-audio-tokens or the model profile).")
    return words


# --- speakable text ---------------------------------------------------------------------

# Emoji and pictographs (no spoken form), with the space before them and the joiners inside
# emoji sequences, so "day 👍🏽!" reads "day!". Letters of every script are untouched.
_PICTOGRAPH = (
    "["
    "\U0001F000-\U0001FAFF"  # mahjong .. emoticons, transport, flags, skin tones, symbols ext-A
    "\u2600-\u27BF"          # miscellaneous symbols, dingbats
    "\u2B00-\u2BFF"          # stars, squares, arrows
    "\u231A\u231B\u2328\u23CF\u23E9-\u23F3\u23F8-\u23FA"  # watch, hourglass, media keys
    "\uFE0E\uFE0F\u20E3"     # emoji variation selectors, keycap
    "\U000E0020-\U000E007F"  # emoji tag sequences (subdivision flags)
    "]"
)
_PICTOGRAPHS = re.compile(f"[ \t]*{_PICTOGRAPH}(?:{_PICTOGRAPH}|\u200d)*")
_JOINERS = {"\u200c", "\u200d"}  # ZWNJ / ZWJ: meaningful between letters (Persian, Indic)
_LINE_BREAKS = str.maketrans({"\r": "\n", "\v": "\n", "\x85": "\n", "\u2028": "\n",
                              "\f": "\n\n", "\u2029": "\n\n"})


def speakable_text(raw: str, *, markdown: bool) -> str:
    """Text a voice can read: clean Unicode, no emoji, Markdown reduced to sentences.

    Paragraphs are separated by one blank line; inside a paragraph whitespace is single spaces
    (Markdown) or kept line by line (plain text, where a line break may mean a list or verse).
    """
    text = unicodedata.normalize("NFKC", raw.replace("\r\n", "\n")).translate(_LINE_BREAKS)
    text = text.replace("\u2044", "/")  # NFKC turns ½ into 1⁄2; engines know "1/2"
    text = _drop_unspeakable_chars(_PICTOGRAPHS.sub("", text))
    if markdown:
        text = _markdown_to_paragraphs(text)
    return _normalise_whitespace(spoken_forms(text))


def _drop_unspeakable_chars(text: str) -> str:
    """Remove control, format (zero-width, bidi, soft hyphen) and private-use characters."""
    kept: list[str] = []
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if char in "\n\t" or category[0] != "C":
            kept.append(char)
        elif char in _JOINERS and _between_letters(text, i):
            kept.append(char)
    return "".join(kept)


def _between_letters(text: str, i: int) -> bool:
    before = unicodedata.category(text[i - 1])[0] if i > 0 else ""
    after = unicodedata.category(text[i + 1])[0] if i + 1 < len(text) else ""
    return before in ("L", "M") and after == "L"


def _normalise_whitespace(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --- Markdown ---------------------------------------------------------------------------

_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_SENTENCE_END = ".!?…" + CJK_SENTENCE_END
_PAUSE_END = ",;:" + CJK_CLAUSE_END
_CLOSERS = "\"'”’»›)]}" + CJK_CLOSERS
_HTML_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.DOTALL | re.IGNORECASE)


def _markdown_to_paragraphs(text: str) -> str:
    """Every heading, paragraph, list and table of the Markdown becomes one paragraph."""
    reader = _BlockReader()
    for token in _MARKDOWN.parse(text):
        reader.feed(token)
    return "\n\n".join(p for p in (" ".join(p.split()) for p in reader.paragraphs) if p)


class _BlockReader:
    """Walks markdown-it's block tokens; lists and tables are read as runs of sentences."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.sentences: list[str] = []  # of the list or table being read
        self.cells: list[str] = []      # of the table row being read
        self.depth = 0                  # nesting of lists and tables
        self.in_heading = self.in_cell = False

    def feed(self, token: Token) -> None:
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open", "table_open"):
            self.depth += 1
        elif kind in ("bullet_list_close", "ordered_list_close", "table_close"):
            self.depth -= 1
            if self.depth == 0:
                self.paragraphs.append(" ".join(self.sentences))
                self.sentences = []
        elif kind in ("heading_open", "heading_close"):
            self.in_heading = kind == "heading_open"
        elif kind in ("th_open", "td_open", "th_close", "td_close"):
            self.in_cell = kind.endswith("_open")
        elif kind == "tr_close":
            self.sentences.append(_as_sentence(", ".join(c for c in self.cells if c)))
            self.cells = []
        elif kind == "inline":
            self._read_inline(_inline_text(token))
        elif kind == "html_block":
            self.paragraphs.append(html.unescape(_HTML_TAG.sub(" ", token.content)))
        # fence and code_block are dropped on purpose (see the module docstring)

    def _read_inline(self, spoken: str) -> None:
        if self.in_cell:
            self.cells.append(spoken)
        elif self.depth:
            self.sentences.append(_as_sentence(spoken))
        else:
            self.paragraphs.append(_as_sentence(spoken) if self.in_heading else spoken)


def _inline_text(token: Token) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        # emphasis/link markers, images and inline HTML say nothing
    return "".join(parts).strip()


def _as_sentence(text: str) -> str:
    """Give a heading / list item / table row a full stop so the voice pauses after it."""
    text = text.strip()
    core = text.rstrip(_CLOSERS)
    if not core or core[-1] in _SENTENCE_END + _PAUSE_END:
        return text
    return text + "."


# --- splitting --------------------------------------------------------------------------

# Strength of the break between two neighbouring words; a chunk boundary prefers the strongest.
WORD, CLAUSE, SENTENCE, PARAGRAPH = 0, 1, 2, 3

_OPENERS = "\"'“‘«‹([{¿¡"
_DASHES = ("—", "–", "--", "-")
# Abbreviations that introduce a name and so never end a sentence ("Dr. Chen", "St. Louis").
_TITLES = frozenset("mr mrs ms dr prof st rev gen col capt lt sgt hon sen rep gov mt fr messrs "
                    "e.g i.e cf vs viz approx".split())
# Abbreviations that never end a sentence when a number follows ("No. 5", "p. 12", "Fig. 3").
_BEFORE_NUMBERS = frozenset("no nos p pp vol vols fig figs ch sec art eq ed".split())
_INITIALS = re.compile(r"(?:[A-Z]\.)*[A-Z]")      # "J", "U.S", "J.R.R" (the last dot removed)
_LIST_MARKER = re.compile(r"(?:[-*•+]|\d{1,3}[.)]|[a-zA-Z][.)])")


def split_for_narration(text: str, max_words: int) -> list[str]:
    """Cut text into chunks of at most `max_words` spoken words, at the strongest boundaries.

    Paragraph breaks are used first, then sentence ends, then clause marks (, ; : dashes ...),
    and only a sentence with no usable mark is cut between words. Small pieces are packed
    together greedily; a chunk under 2/3 full takes whole sentences from the next paragraph.
    Chunks are stripped slices of `text`: nothing is lost or repeated. A character of a script
    written without spaces counts as the fraction of a word it takes to say (`spoken_words`).
    """
    if max_words < 1:
        raise ConfigError(f"max_words must be at least 1 (got {max_words}); raise the "
                          "per-request audio budget.")
    spans = [(m.start(), m.end()) for m in WORD_TOKEN.finditer(text)]
    if not spans:
        return []
    breaks = _break_strengths(text, spans)
    packer = _Packer(max_words, [token_weight(text[a:b]) for a, b in spans])
    packer.add_range(0, len(spans), PARAGRAPH, breaks)
    return [text[spans[a][0]:spans[b - 1][1]] for a, b in packer.finish()]


def word_breaks(text: str) -> tuple[list[tuple[int, int]], list[int]]:
    """Word spans of `text` and the strength of the break after each (WORD..PARAGRAPH).

    The transcript assembler uses these to match pauses in the audio to breaks in the text."""
    spans = [(m.start(), m.end()) for m in WORD_TOKEN.finditer(text)]
    return spans, _break_strengths(text, spans) if spans else []


def _break_strengths(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """breaks[i] is the strength of the gap after word i (the last entry is unused)."""
    words = [text[a:b] for a, b in spans]
    line_starts = {0} | {i + 1 for i in range(len(spans) - 1)
                         if "\n" in text[spans[i][1]:spans[i + 1][0]]}
    breaks = []
    for i in range(len(spans) - 1):
        gap = text[spans[i][1]:spans[i + 1][0]]
        if gap.count("\n") >= 2:
            breaks.append(PARAGRAPH)
        elif i in line_starts and _LIST_MARKER.fullmatch(words[i]):
            breaks.append(WORD)  # "1." or "-" opening a list item stays with its item
        elif "\n" in gap and _LIST_MARKER.fullmatch(words[i + 1]):
            breaks.append(SENTENCE)  # a new list item begins
        else:
            strength = _gap_strength(words[i], words[i + 1])
            breaks.append(max(strength, CLAUSE) if "\n" in gap else strength)
    breaks.append(PARAGRAPH)
    return breaks


def _gap_strength(word: str, next_word: str) -> int:
    """How strongly the text breaks between `word` and the word after it."""
    core = word.rstrip(_CLOSERS)  # a sentence may end inside quotes or brackets: "Stop."
    if not core:
        return WORD
    if core.endswith(tuple(CJK_SENTENCE_END)):
        return SENTENCE  # ideographic full stops end a sentence whatever follows
    if core.endswith(("...", "…", "!", "?")):
        return SENTENCE if _starts_sentence(next_word) else CLAUSE
    if core.endswith("."):
        return SENTENCE if _ends_sentence(core[:-1], next_word) else WORD
    if core.endswith(tuple(_PAUSE_END)) or core.endswith(_DASHES):
        return CLAUSE
    return WORD


def _ends_sentence(stem: str, next_word: str) -> bool:
    """Whether a full stop after `stem` ends a sentence, judged with the word that follows."""
    bare = stem.lstrip(_OPENERS)
    if bare.lower() in _TITLES or _INITIALS.fullmatch(bare):
        return False  # "Dr. Chen", "J. R. R. Tolkien", "U.S. Army"
    if bare.lower() in _BEFORE_NUMBERS and next_word[:1].isdigit():
        return False
    return _starts_sentence(next_word)


def _starts_sentence(word: str) -> bool:
    first = word.lstrip(_OPENERS)[:1]
    # Caseless scripts (Chinese, Arabic...) have no capitals to look for.
    return first.isdigit() or first.isupper() or (first.isalpha() and not first.islower())


# A chunk less than this full is topped up with whole sentences of the next paragraph rather
# than closed at the paragraph break: a paragraph break is nicer, but not worth many more
# requests (on LJ001 in ~240-word paragraphs: 1/2 -> 40 chunks, 2/3 -> 32, 1 -> 29).
_MIN_FILL = 2 / 3


class _Packer:
    """Greedy packing of word ranges into chunks; the last chunk stays open for more words.

    Sizes are spoken words (a token's weight; 1 for a word, less for a character)."""

    def __init__(self, max_words: int, weights: list[float]) -> None:
        self.max_words = max_words
        self.closed: list[tuple[int, int]] = []
        self.open: tuple[int, int] | None = None
        self.prefix = [0.0]
        for weight in weights:
            self.prefix.append(self.prefix[-1] + weight)

    def size(self, start: int, end: int) -> float:
        return self.prefix[end] - self.prefix[start] - 1e-9  # no rounding error tips a fit over

    def add_range(self, start: int, end: int, level: int, breaks: list[int]) -> None:
        """Add words[start:end], cut at gaps of strength >= level (weaker levels if needed)."""
        for a, b in _pieces(start, end, level, breaks):
            if self.open and self.size(self.open[0], b) <= self.max_words:
                self.open = (self.open[0], b)
            elif self.size(a, b) > self.max_words or (level == PARAGRAPH and self._underfilled()):
                self.add_range(a, b, level - 1, breaks)  # a word piece is 1 word: always fits
            else:
                if self.open:
                    self.closed.append(self.open)
                self.open = (a, b)

    def _underfilled(self) -> bool:
        return self.open is not None and self.size(*self.open) < _MIN_FILL * self.max_words

    def finish(self) -> list[tuple[int, int]]:
        return self.closed + ([self.open] if self.open else [])


def _pieces(start: int, end: int, level: int, breaks: list[int]) -> list[tuple[int, int]]:
    pieces, piece_start = [], start
    for i in range(start, end - 1):
        if breaks[i] >= level:
            pieces.append((piece_start, i + 1))
            piece_start = i + 1
    pieces.append((piece_start, end))
    return pieces


# --- languages --------------------------------------------------------------------------

# The language a script points to when the manifest names none (Latin: see `text_language`).
_SCRIPT_LANGUAGES = {"CJK": "zh", "HIRAGANA": "ja", "KATAKANA": "ja", "HANGUL": "ko",
                     "CYRILLIC": "ru", "GREEK": "el", "ARABIC": "ar", "HEBREW": "he",
                     "DEVANAGARI": "hi", "THAI": "th", "LAO": "lo", "KHMER": "km",
                     "MYANMAR": "my", "GEORGIAN": "ka", "ARMENIAN": "hy", "BENGALI": "bn",
                     "TAMIL": "ta"}


def writing_script(text: str) -> str:
    """The script most of the text's letters are written in ("LATIN", "CJK", "CYRILLIC"...),
    as Unicode names it; Japanese (kana among Han) is "HIRAGANA"/"KATAKANA"."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = unicodedata.name(char, "UNKNOWN ?").split()[0]
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "LATIN"
    kana = counts.get("HIRAGANA", 0) + counts.get("KATAKANA", 0)
    if kana and kana * 10 >= sum(counts.values()):  # kana among kanji: Japanese
        return "HIRAGANA"
    return max(counts, key=counts.__getitem__)


def text_language(text: str, given: str | None = None) -> str:
    """The text's language: the one the manifest gives, else what its script says (Latin
    script is taken as English: name other languages in the manifest's `language` column)."""
    return given or _SCRIPT_LANGUAGES.get(writing_script(text), "en")
