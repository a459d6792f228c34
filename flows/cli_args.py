"""The `audiobatch` command line's arguments: how they are declared and what they become.

The parser classes (defaults shown in --help, a suggestion after a typo), the argument groups
that several subcommands share (model, throughput, scale-out, re-runs, transcription, economy,
narration, captions), and the mapping from argparse destinations to a flow's own parameters and its
options model (tasks/options.py); a value the model refuses is a usage error naming the flag.

Kept apart from flows/cli.py, which registers the subcommands and runs their flows, so that
every flag and its destination's name are read in one place; this module imports neither
Prefect nor a flow.
"""
from __future__ import annotations

import argparse
import difflib
from typing import Any

from pydantic import ValidationError

from audiobatch.tasks.errors import ConfigError, InputError
from audiobatch.tasks.inputs.vocabulary import read_vocabulary_file
from audiobatch.tasks.options import JobOptions


class UsageError(ConfigError):
    """A flag's value is not acceptable (exit 2, with the subcommand's usage)."""


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default unless its help already says it (or it has none)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default  # `is`: 1.0 == True and 0.0 == False would hide real defaults
        if (default is None or default is True or default is False or default == argparse.SUPPRESS
                or default == [] or "default" in text.lower() or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class Parser(argparse.ArgumentParser):
    """argparse with defaults in --help and a suggestion after a misspelled choice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.set_defaults(cli_parser=self)  # the deepest parser used wins: errors show its usage

    def error(self, message: str) -> Any:
        if "invalid choice: '" in message:
            typed = message.split("invalid choice: '", 1)[1].split("'", 1)[0]
            choices = [c for action in self._actions for c in (action.choices or [])]
            message += suggestion(typed, [str(c) for c in choices])
        super().error(message)


def suggestion(typed: str, known: list[str]) -> str:
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> None:
    """Unknown arguments, answered by the subcommand's own usage and the nearest flag."""
    flags = [flag for action in parser._actions for flag in action.option_strings]
    hints = "".join(suggestion(extra.split("=", 1)[0], flags) for extra in extras
                    if extra.startswith("-"))
    parser.error(f"unrecognized arguments: {' '.join(extras)}{hints}")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="model id (default: the embedded model, or "
                       "AUDIOBATCH_MODEL; gpt-audio-1.5 when --base-url is set)")
    group.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. "
                       "https://api.openai.com/v1 (default: OPENAI_BASE_URL, else the embedded model)")
    group.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                       help="environment variable holding the API key (default OPENAI_API_KEY)")
    group.add_argument("--provider", help="price table to use (default: from the base URL host)")
    group.add_argument("--profiles", help="TOML file with your model profiles and prices")
    group.add_argument("--price-as", help="price usage as this OpenAI model (e.g. to see what a "
                       "local run would cost on gpt-audio-1.5)")


def add_run_args(parser: argparse.ArgumentParser, *, manifest: bool = True) -> None:
    """Options every job shares (the manifest argument itself is optional for feeds)."""
    if manifest:
        parser.add_argument("manifest", help="CSV or Parquet manifest (path or fsspec URL)")
    parser.add_argument("--out", default="outputs", help="output root (folder or fsspec URL)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    add_model_args(parser)
    group = parser.add_argument_group("throughput and reliability")
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    group.add_argument("--requests-per-minute", type=float, help="request rate cap")
    group.add_argument("--tokens-per-minute", type=float, help="token rate cap")
    group.add_argument("--max-attempts", type=int, default=6, help="attempts per request")
    group.add_argument("--max-backoff-s", type=float, default=30.0,
                       help="longest wait between attempts (retry-after included)")
    group.add_argument("--timeout-s", type=float, default=120.0, help="timeout per attempt")
    group.add_argument("--item-deadline-s", type=float, help="give up on an item after this long")
    group.add_argument("--max-cost-usd", type=float, help="stop before spending more than this")
    group.add_argument("--max-download-mb", type=float, default=4096.0, help="URL size cap")
    group.add_argument("--download-deadline-s", type=float, default=3600.0,
                       help="give up on a download after this long (default 3600)")
    group.add_argument("--min-download-kb-s", type=float, default=16.0,
                       help="give up on a download slower than this over 30 s (default 16; 0: off)")
    group.add_argument("--allow-scheme", dest="allow_schemes", action="append", default=None,
                       metavar="SCHEME", help="enable an fsspec URL scheme (s3, gs, ...)")
    group.add_argument("--allow-host", dest="allow_hosts", action="append", default=None,
                       metavar="HOST[:PORT]", help="let URLs in manifests and feeds reach this "
                       "non-public host (intranet); also AUDIOBATCH_ALLOW_HOSTS")
    group = parser.add_argument_group("scale-out")
    group.add_argument("--task-runner", default="default", metavar="default|dask|dask://HOST:PORT",
                       help="where item tasks run: this process, a local Dask cluster, or an "
                            "existing Dask scheduler (default: this process)")
    group.add_argument("--dask-workers", type=int, metavar="N",
                       help="processes of the local Dask cluster (default: one per CPU)")
    group = parser.add_argument_group("re-runs")
    group.add_argument("--run-id", help="use (or resume) this run id")
    group.add_argument("--no-resume", dest="resume", action="store_false",
                       help="start a new run even if the same job was interrupted")
    group.add_argument("--no-cache", dest="use_cache", action="store_false",
                       help="send every request even if an identical one succeeded before")
    group.add_argument("--rerun-failed", metavar="RUN_ID",
                       help="only the items that failed in that run ('last' for the latest)")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                        default=None, help="no progress bar")


def add_data_root_arg(parser: argparse.ArgumentParser) -> None:
    """For flows that run manifests from others (deployments, the inbox)."""
    parser.add_argument("--data-root", dest="data_roots", action="append", default=None,
                        metavar="DIR", help="a folder whose files manifests from others (submit, "
                        "the inbox, the Prefect API) may name; repeat for more. None: such runs "
                        "read no local files (an inbox: its own folder). Also AUDIOBATCH_DATA_ROOTS "
                        "on the worker")


def add_transcription_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transcription")
    group.add_argument("--language", help="ISO 639-1 language of the audio (default: per row)")
    group.add_argument("--prompt", help="context for the model: names, spellings, topic")
    group.add_argument("--vocabulary", type=vocabulary_file, metavar="FILE",
                       help="names and terms to spell right, one a line (at most 100): hints to "
                       "the model, near misses corrected or flagged (per row: a `vocabulary` "
                       "column, terms separated by ;)")
    group.add_argument("--max-audio-tokens", type=int,
                       help="per-request audio token budget (default from the model profile: 4096)")
    group.add_argument("--overlap-s", type=float, default=0.0,
                       help="overlap between chunks, de-duplicated when joining (default 0)")
    group.add_argument("--no-word-times", dest="word_times", action="store_false", default=None,
                       help="skip aligning words (no `words` dataset; caption times estimated)")
    group.add_argument("--output-format", help="transcript files: all (default), or a comma "
                       "list of txt, srt, vtt, json")
    group.add_argument("--context-words", type=int, help="words of the previous chunk's "
                       "transcript sent with the next as context (default 60; 0: chunks in parallel)")
    group.add_argument("--no-qa", dest="qa", action="store_false", default=None,
                       help="keep every reply as it came (no checks, no re-asks, no flags)")
    group.add_argument("--no-qa-reference", dest="qa_reference", action="store_false",
                       default=None, help="don't compare a remote model's replies with the "
                       "embedded Whisper's hearing of the same chunk")
    group.add_argument("--chapters", nargs="?", const="auto", choices=["auto", "offline", "off"],
                       help="chapters, show notes and sponsor spots per item: by a tool call to a "
                       "remote model (offline with the embedded one); `--chapters offline` never "
                       "sends a request (default: off; per row: chapters)")
    group.add_argument("--speakers", metavar="auto|N", help="label who speaks: auto (the number "
                       "is found), or N speakers (1-20); per row: speakers (default off; docs: Speakers)")
    add_economy_args(group)
    add_caption_args(parser)


def add_caption_args(parser: argparse.ArgumentParser) -> None:
    """Caption limits (both jobs write captions; added once to a parser of both); unset
    ones take the preset's."""
    if "--caption-preset" in parser._option_string_actions:
        return
    group = parser.add_argument_group("captions (.srt/.vtt: broadcast rules, see docs/captions.md)")
    group.add_argument("--caption-preset", choices=["broadcast", "children"], default=None,
                       help="broadcast (default): 42 characters a line, 2 lines, 1-7 s, 20 "
                       "characters a second; children: 17 characters a second")
    group.add_argument("--caption-line-chars", type=int, metavar="N", help="characters a line")
    group.add_argument("--caption-lines", type=int, metavar="N", help="lines a caption")
    group.add_argument("--caption-min-s", type=float, metavar="S", help="shortest caption")
    group.add_argument("--caption-max-s", type=float, metavar="S", help="longest caption")
    group.add_argument("--caption-cps", type=float, metavar="N",
                       help="reading speed: characters a second at most")


def vocabulary_file(path: str) -> list[str]:
    """`--vocabulary FILE`: its terms, checked (tasks/inputs/vocabulary.py); a bad file is a
    usage error naming the line."""
    try:
        return list(read_vocabulary_file(path))
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_economy_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--economy", action="store_true",
                       help="send fewer audio tokens: shorten long pauses, pack more speech per "
                       "request; all times stay on the recording's timeline")
    group.add_argument("--economy-speed", type=float, metavar="X",
                       help="economy with speech X times faster, 1.0-2.0, pitch kept (implies "
                       "--economy; default: the preset's speed, see the docs: Costs and economy)")


def add_narration_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("narration")
    group.add_argument("--voice", default="alloy", help="voice (default alloy; per row: voice)")
    group.add_argument("--format", dest="audio_format", default="mp3",
                       choices=["wav", "mp3", "flac", "opus", "m4b"],
                       help="audio format (default mp3; m4b: an audiobook with chapters)")
    group.add_argument("--speed", type=float, default=1.0, help="0.25-4.0, pitch preserved")
    group.add_argument("--instructions", help="style or tone for the narrator")
    group.add_argument("--target-lufs", type=float, default=-16.0, help="loudness (default -16)")
    group.add_argument("--max-audio-tokens", type=int,
                       help="per-request audio-out token budget (default from the profile: 4096)")
    group.add_argument("--no-verify", dest="verify", action="store_false",
                       help="do not hear each chunk back (verification is on by default)")
    group.add_argument("--verify-attempts", type=int, default=3,
                       help="takes per chunk when verification mishears it (default 3)")
    group.add_argument("--no-captions", dest="captions", action="store_false",
                       help="no .srt/.vtt captions (by default the text is aligned to the audio)")
    group.add_argument("--feed-url", help="public URL where <out>/media/ is served: write a "
                       "podcast feed of the narrations (media/feed.xml), updated run by run")
    add_caption_args(parser)


# Destinations that steer the command line itself, never a flow parameter or option.
CLI_ONLY = {"command", "api_key_env", "handler", "cli_parser", "root_parser", "json"}
# Flow parameters of their own; every other destination is an option (tasks/options.py).
FLOW_PARAMETERS = {"manifest", "out", "feed", "limit", "since", "force", "inbox", "stale_claim_h"}
# How an option is typed, where that is not --its-name-with-dashes.
FLAG_NAMES = {"audio_format": "--format", "allow_schemes": "--allow-scheme", "allow_hosts": "--allow-host",
              "data_roots": "--data-root",
              "use_cache": "--no-cache", "resume": "--no-resume", "progress": "--no-progress"}


def flag_of(name: str) -> str:
    return FLAG_NAMES.get(name, f"--{name.replace('_', '-')}")


def split_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the flow's own parameters, the flat options) that the user gave (or argparse defaulted)."""
    given = {k: v for k, v in vars(args).items() if k not in CLI_ONLY}
    top = {k: v for k, v in given.items() if k in FLOW_PARAMETERS}
    return top, {k: v for k, v in given.items() if k not in FLOW_PARAMETERS}


def build_options(options_model: type[JobOptions], flat: dict[str, Any]) -> JobOptions:
    """The flow's options model; a value it refuses is a usage error naming the flag."""
    try:
        return options_model.from_flat(**flat)
    except ValidationError as error:
        problems = [f"{flag_of(str(e['loc'][-1]))} {flat.get(str(e['loc'][-1]))!s}: "
                    f"{e['msg'][0].lower()}{e['msg'][1:]}" for e in error.errors()]
        raise UsageError("; ".join(problems)) from None


def flow_kwargs(args: argparse.Namespace, options_model: type[JobOptions]) -> dict[str, Any]:
    """argparse destinations are named like the options; group them into the flow's model."""
    top, flat = split_args(args)
    return {**top, "options": build_options(options_model, flat)}
