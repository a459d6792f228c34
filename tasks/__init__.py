"""The pipeline's steps, one module per step, grouped by stage in the order data flows through them.

    errors.py, options.py   what every stage shares: the one exception tree; the job's typed options
    bounded.py     the decoding budget every decoder of others' input works within (and its
                   bounded decompression): audio, archives, HTTP bodies
    inputs/        manifest rows -> items; where their bytes come from, and what a run may reach
    audio/         decode, loudness, pauses and voice, chunks cut to the request budget; joins
    text/          narration text: books and files -> speakable text -> word and sentence breaks
    model/         the model client: wire contract, HTTP, retries, limits, profiles, prices
    outputs/       Parquet datasets and media under the output root; a run's staged rows
    reports/       progress, summaries, past runs, the HTML report
    captions/      word times and the caption segments and files built from them (both jobs)
    run/           one run: its context, items in batches, every request's cache/budget/cost
    extract/       a finished transcript's chapters, show notes and sponsor spots (--chapters)
    speakers/      who spoke when: one diarization per item, a speaker on every segment and word
    transcription/ one item transcribed: chunks -> requests -> QA -> assembled transcript
    narration/     one item narrated: text -> requests -> verification -> audio, captions, feed
    podcast/       feeds: episodes -> items, what is new, transcripts a feed ships

A package imports only the packages its own `__init__` names, all of them lower in the stack
(audio at the bottom, the jobs' packages on top; docs/architecture.md draws it), and never
flows/ or localmodel/: the model client takes its transport as a parameter and the embedded
Whisper arrives on the run context as an `Aligner` and ears, the diarization engine as a
`SpeakerFinder` (flows/runtime.py wires them).
"""
