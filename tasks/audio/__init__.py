"""Audio: streaming decode (PyAV) -> 16 kHz mono -> loudness -> chunks cut in pauses within the
request budget (prepare.py), with voice detection (Silero, vad.py; held notes, tonal.py;
syllable beats, syllables.py), economy (shortened pauses), and the narration side's joins,
loudness and time-stretch (stitch.py). Imports: errors and bounded (the decoding budget) only.
"""
