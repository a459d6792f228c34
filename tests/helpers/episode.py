"""A podcast episode of unrelated topics with no spoken chapter cues, for the chapters tests and
benchmarks/chapters.py: the real LJ Speech reading on printing (a human reader, 171 s) and
topic texts written for this (bees, volcanoes, sourdough, chess, marathons) narrated by the
embedded voice (Piper), joined with short pauses, as one 16 kHz wav. Where each topic starts is
known, and the words a title on that topic would use. A sponsor read may be put in.

Narration is cached per text under the folder given (the voice is deterministic), so a second
episode from the same topics costs only the joining.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from tests.helpers.data import SPEECH, TEXTS
from tests.helpers.e2e import concatenate_clips

PRINTING = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"
TOPICS: dict[str, tuple[frozenset[str], str]] = {
    "bees": (frozenset({"bee", "bees", "hive", "hives", "colony", "honey", "queen", "worker", "workers",
                        "nectar", "pollen", "wax", "swarm", "forager", "foragers"}), """
A honey bee colony lives as one animal made of thousands of bodies. The queen lays the eggs,
up to two thousand on a summer day, while the workers do everything else. Young workers clean
the cells and feed the larvae. A little older, they build wax comb, guard the entrance and fan
their wings to cool the hive. Only in the last weeks of their short lives do they leave as
foragers, flying out for nectar and pollen. A forager that finds a rich patch of flowers comes
home and dances on the comb. The angle of her waggle run tells her sisters the direction of the
flowers against the sun, and its length tells them the distance. Nectar is passed from mouth to
mouth, thickened by fanning until the water has gone, and sealed under a cap of wax as honey. A
strong hive may store more than fifty kilograms of honey in a good year, far more than the bees
need for winter, which is why beekeepers can take some of it. In winter the workers cluster
around the queen and shiver their flight muscles to keep the centre of the cluster warm. In
spring a crowded colony raises new queens, and the old queen leaves with half of the workers in
a swarm that hangs from a branch until scouts agree on a new home.
"""),
    "volcanoes": (frozenset({"volcano", "volcanoes", "volcanic", "magma", "lava", "eruption",
                             "eruptions", "crater", "ash", "plate", "plates", "tectonic"}), """
Volcanoes form where molten rock from deep inside the earth finds a way to the surface. Most of
them sit along the edges of tectonic plates. Where one plate dives beneath another, water carried
down with the sinking slab lowers the melting point of the rock above it, and magma rises. That
magma is thick and full of dissolved gas, so these volcanoes tend to erupt explosively, throwing
ash high into the sky. Mount Saint Helens and Pinatubo are volcanoes of this kind. Where plates
pull apart, as along the middle of the Atlantic Ocean, the magma is runny basalt that pours out
quietly as lava. Hawaii is different again: it sits over a hot spot in the middle of a plate, and
as the plate slides slowly over it, a chain of volcanic islands is left behind. Before an
eruption, magma pushing upward makes the ground swell and shake with small earthquakes, and the
gases leaking from the crater change. Volcanologists watch all of these signs with tilt meters,
seismometers and gas sensors. A large eruption can cool the whole planet for a year or two,
because fine ash and sulphur droplets in the upper atmosphere reflect sunlight back into space.
After Tambora erupted in eighteen fifteen, Europe had a year without a summer.
"""),
    "sourdough": (frozenset({"sourdough", "bread", "loaf", "loaves", "dough", "starter", "flour",
                             "yeast", "oven", "crust", "baking", "bake", "baker", "bakers"}), """
Sourdough bread rises without any yeast from a packet. Instead the baker keeps a starter, a
paste of flour and water in which wild yeast and lactic acid bacteria live together. Fed fresh
flour and water every day, a starter becomes bubbly and smells pleasantly sour, and it can be
kept alive for decades. To make a loaf, some of the starter is mixed into a dough of flour,
water and salt. The dough is then folded every half hour for a few hours, which builds the
gluten network that will trap the gas made by the yeast. The bacteria make lactic and acetic
acids, and those acids give sourdough its tang and help the bread keep for days. After shaping,
many bakers let the loaf rest overnight in the fridge, where the flavour deepens slowly. The
oven should be as hot as it will go. Baking the loaf inside a heavy covered pot traps steam
around it during the first twenty minutes, which keeps the crust soft long enough for the loaf
to spring up. With the lid off, the crust darkens, blisters and crackles as it cools on a rack.
Cutting the bread while it is still hot lets the steam escape and leaves the crumb gummy, so
patient bakers wait an hour.
"""),
    "chess": (frozenset({"chess", "pawn", "pawns", "bishop", "bishops", "knight", "knights", "king",
                         "opening", "openings", "board", "player", "players", "grandmaster",
                         "grandmasters", "game", "games", "move", "moves", "endgame"}), """
A game of chess is usually divided into three parts: the opening, the middlegame and the
endgame. In the opening both players bring out their knights and bishops, fight for the centre
of the board with their pawns, and castle to tuck the king away safely. Openings have names
that go back centuries, such as the Sicilian Defence, the Queen's Gambit and the Ruy Lopez, and
strong players study the first moves of these lines deeply. In the middlegame plans take over
from memory. A player may attack the enemy king, win space on one side of the board, or create
a weak pawn in the opponent's camp and pile up pressure against it. Tactics such as the fork,
where a knight attacks two pieces at once, and the pin decide many games. When most pieces have
been traded, the endgame begins, and the king, which had to hide for most of the game, becomes a
strong piece that marches forward to support its pawns. Grandmasters are famous for turning a
tiny advantage, one extra pawn or a better bishop, into a win in the endgame. Since computers
began beating world champions, players of every level train with chess engines.
"""),
    "marathons": (frozenset({"marathon", "marathons", "runner", "runners", "running", "race",
                             "races", "mile", "miles", "kilometre", "kilometres", "pace",
                             "training", "shoes", "finish", "wall"}), """
Running a marathon means covering forty two kilometres and a little more, a distance that most
people need months of training to finish. A typical plan builds up slowly over sixteen weeks,
with one long run every weekend that grows from ten kilometres to more than thirty. Most of the
other runs during the week are easy, at a pace at which the runner could still hold a
conversation, because easy running builds the heart and the small blood vessels in the legs
without wearing the body down. Many runners meet the famous wall somewhere after thirty
kilometres, when the glycogen stored in their muscles runs out and every step suddenly feels
heavy. Eating and drinking during the race, energy gels every half hour and water at the aid
stations, pushes the wall back. Good running shoes matter too, and the newest racing shoes
with carbon plates inside the foam have made elite runners measurably faster. On race day the
hardest thing is to start slowly. Excited runners who rush the first kilometres at a pace they
cannot hold pay for it at the end, while those who run an even pace pass hundreds of people in
the last miles before the finish line.
"""),
}
SPONSOR_READ = ("This episode is brought to you by Northwind Coffee. Northwind roasts small "
                "batches of beans every morning and ships them the same day, so your coffee "
                "arrives fresh. Go to northwind coffee dot com and use code LISTEN for twenty "
                "percent off your first order.")


@dataclass(frozen=True)
class Episode:
    path: Path
    parts: list[str]  # topic names in order ("printing", "bees", ..., "sponsor")
    starts_s: list[float]  # where each part starts
    duration_s: float

    def topic_changes(self) -> list[float]:
        """Starts of the topics after the first (sponsor reads are not topics)."""
        return [s for part, s in zip(self.parts, self.starts_s) if part != "sponsor"][1:]

    def topic_at(self, time_s: float) -> str:
        current = self.parts[0]
        for part, start in zip(self.parts, self.starts_s):
            if start <= time_s:
                current = part
        return current

    def main_topic(self, start_s: float, end_s: float) -> str:
        """The topic (not a sponsor read) that fills most of `start_s`..`end_s`."""
        ends = [*self.starts_s[1:], self.duration_s]
        overlap = {part: max(0.0, min(end, end_s) - max(start, start_s))
                   for part, start, end in zip(self.parts, self.starts_s, ends) if part != "sponsor"}
        return max(overlap, key=overlap.__getitem__)


def keywords_of(topic: str) -> frozenset[str]:
    if topic == "printing":
        return frozenset({"printing", "printed", "print", "printers", "type", "types", "letter",
                          "letters", "book", "books", "page", "pages", "roman", "gothic", "italian"})
    return TOPICS[topic][0]


def narrated(text: str, folder: Path) -> Path:
    """The embedded voice reading `text`, as a wav (cached by the text's digest)."""
    from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, shared_engines

    path = folder / f"tts-{hashlib.sha256(text.encode()).hexdigest()[:16]}.wav"
    if not path.exists():
        samples = shared_engines().synthesize_blocking(" ".join(text.split()))
        sf.write(path, samples, OUTPUT_SAMPLE_RATE, subtype="PCM_16")
    return path


def build_episode(folder: Path, parts: list[str], name: str = "episode.wav",
                  gap_s: float = 0.7) -> Episode:
    """The parts ("printing", topic names, "sponsor") joined with `gap_s` pauses."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = [PRINTING if part == "printing" else
             narrated(SPONSOR_READ if part == "sponsor" else TOPICS[part][1], folder) for part in parts]
    joined = concatenate_clips(clips, [gap_s] * (len(clips) - 1), folder / name)
    return Episode(joined.path, list(parts), joined.starts_s, joined.duration_s)


def part_text(part: str) -> str:
    if part == "printing":
        text = (TEXTS / "ljspeech_LJ001.txt").read_text()
        return text[:2400].rsplit(".", 1)[0] + "."  # about as much as the 171 s reading
    return " ".join((SPONSOR_READ if part == "sponsor" else TOPICS[part][1]).split())


def text_segments(parts: list[str], words_per_s: float = 2.6, pause_s: float = 0.5):
    """The parts' texts as timed segments of about 12 words, as if read at `words_per_s` with
    `pause_s` between segments (no audio: for the text-only tests), and each part's start."""
    from audiobatch.tasks.captions.segments import Segment

    segments, starts, at = [], [], 0.0
    for part in parts:
        starts.append(at)
        words = part_text(part).split()
        for first in range(0, len(words), 12):
            piece = words[first:first + 12]
            length = len(piece) / words_per_s
            segments.append(Segment(0, round(at, 2), round(at + length, 2), " ".join(piece)))
            at += length + pause_s
    return segments, starts, at
