"""MkDocs hook: the reference parts of the docs site, generated from the code when the site is
built, so that they cannot drift from it (mkdocs.yml names this file under `hooks:`).

A page asks for a generated part with a marker that this hook replaces:

    <!-- generated: cli-reference -->    every subcommand and option: the CLI's own argparse parser
    <!-- generated: dataset-schemas -->  every Parquet dataset and column: `SCHEMAS` of
                                         tasks/outputs/datasets.py (meanings: columns.py here)
    <!-- generated: stage-packages -->   the packages of tasks/ and what each may import: their
                                         `__init__` docstrings
    <!-- gen:narration-formats -->       inline facts: the narration formats, `text_file` suffixes

DEVELOPERS.md, outside docs/, becomes the page developers.md. An unknown marker fails the build.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import columns  # noqa: E402  (beside this file; mkdocs loads hooks by path)

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- (generated|gen): ?([a-z-]+) -->")
USAGE_COLUMNS = "76"  # argparse wraps usage to the terminal: fixed (identical builds; fits the page)


# --- the command line -------------------------------------------------------------------------

def cli_reference() -> str:
    from audiobatch.flows.cli import build_parser

    parser = build_parser()
    sections = [f"Generated from `audiobatch --help` (`flows/cli.py` and the modules it assembles)."
                f" Options every job shares are repeated under each job; `audiobatch <command>"
                f" --help` prints the same."]
    for path, summary, sub in subcommands(parser, ["audiobatch"]):
        sections.append(command_section(path, summary, sub))
    return "\n\n".join(sections) + "\n"


def subcommands(parser: argparse.ArgumentParser, path: list[str]
                ) -> Iterator[tuple[list[str], str, argparse.ArgumentParser]]:
    """Every runnable subcommand with its one-line help, depth first, as `--help` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from subcommands(sub, [*path, name])
                else:
                    yield [*path, name], helps.get(name, ""), sub


def command_section(path: list[str], summary: str, parser: argparse.ArgumentParser) -> str:
    lines = [f"## {' '.join(path)}", ""]
    if parser.description or summary:
        lines += [escape(parser.description or summary), ""]
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_COLUMNS
    try:
        usage = parser.format_usage().strip()
    finally:
        os.environ.pop("COLUMNS") if previous is None else os.environ.update(COLUMNS=previous)
    first, *rest = usage.removeprefix("usage: ").splitlines()  # continuation lines: 7 fewer spaces
    lines += ["```", first, *(line.removeprefix(" " * len("usage: ")) for line in rest), "```", ""]
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS
                   and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
        if not actions:
            continue
        lines += [f"**{group.title}**", "", "| argument | meaning |", "|---|---|"]
        lines += [f"| {argument_of(a)} | {escape(formatter._expand_help(a))} |" for a in actions]
        lines.append("")
    return "\n".join(lines).rstrip()


def argument_of(action: argparse.Action) -> str:
    if not action.option_strings:
        shown = "\\|".join(map(str, action.choices)) if action.choices else action.metavar or action.dest
        return f"`{shown}`"
    value = ""
    if action.nargs != 0:
        value = " " + (action.metavar if isinstance(action.metavar, str) else
                       "|".join(map(str, action.choices)) if action.choices else action.dest.upper())
    return ", ".join(f"`{flag}{value}`".replace("|", "\\|") for flag in action.option_strings)


def escape(text: str) -> str:
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")
            .replace("<", "&lt;").replace(">", "&gt;"))


# --- outputs ----------------------------------------------------------------------------------

def dataset_schemas() -> str:
    from audiobatch.tasks.outputs.datasets import SCHEMAS

    stale = [f"{dataset}.{column}" for dataset, notes in columns.COLUMNS.items()
             for column in notes if dataset not in SCHEMAS or column not in SCHEMAS[dataset].names]
    if stale:
        raise ValueError(f"docs/hooks/columns.py describes columns the code does not have: {stale}")
    parts = ["| dataset | one row per | columns |", "|---|---|---|"]
    parts += [f"| [`{name}`](#{name}) | {columns.ROW_OF.get(name, '')} | "
              f"{', '.join(schema.names)} |" for name, schema in SCHEMAS.items()]
    for name, schema in SCHEMAS.items():
        parts += ["", f"### {name}", "", f"One row per {columns.ROW_OF.get(name, '(not described yet)')}.",
                  "", "| column | type | meaning |", "|---|---|---|"]
        parts += [f"| `{field.name}` | {escape(str(field.type))} | "
                  f"{columns.meaning(name, field.name) or '(not described yet)'} |" for field in schema]
    return "\n".join(parts) + "\n"


# --- the layout by stage ----------------------------------------------------------------------

def stage_packages() -> str:
    """The packages of tasks/ from the top of the stack down: level, what each may import (its
    docstring's "Imports:"), what it holds (the rest of its docstring)."""
    names = re.findall(r"^    ([a-z_]+)/ ", docstring(ROOT / "tasks" / "__init__.py"), re.MULTILINE)
    holds, imports = {}, {}
    for name in names:
        text = " ".join(docstring(ROOT / "tasks" / name / "__init__.py").split())
        holds[name], _, named = text.partition(" Imports:")
        imports[name] = [word for word in re.findall(r"[a-z_]+", named) if word in names]
    levels: dict[str, int] = {}

    def level(name: str) -> int:  # no circles (tests/test_layout.py), so this ends
        if name not in levels:
            levels[name] = 1 + max((level(dep) for dep in imports[name]), default=0)
        return levels[name]

    for name in names:
        level(name)
    rows = ["| level | package | may import (besides `errors`, `options`) | what it holds |",
            "|---|---|---|---|"]
    for name in sorted(names, key=lambda n: (-levels[n], names.index(n))):
        uses = ", ".join(f"`{dep}`" for dep in imports[name]) or "nothing else"
        rows.append(f"| {levels[name]} | `tasks/{name}/` | {uses} | {escape(holds[name])} |")
    return "\n".join(rows) + "\n"


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


# --- inline facts -----------------------------------------------------------------------------

def narration_formats() -> str:
    from audiobatch.tasks.inputs.manifest import NARRATION_FORMATS

    return either(NARRATION_FORMATS)


def text_file_suffixes() -> str:
    from audiobatch.tasks.inputs.manifest import TEXT_FILE_SUFFIXES

    return either(TEXT_FILE_SUFFIXES)


def either(values: tuple[str, ...]) -> str:
    quoted = [f"`{value}`" for value in values]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


GENERATORS: dict[str, Callable[[], str]] = {
    "cli-reference": cli_reference, "dataset-schemas": dataset_schemas,
    "stage-packages": stage_packages, "narration-formats": narration_formats,
    "text-file-suffixes": text_file_suffixes,
}


def expand(markdown: str) -> str:
    """Replace every marker with what its generator makes (each generator runs once)."""
    made: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in GENERATORS:
            raise ValueError(f"unknown docs marker {match.group(0)}: known are {sorted(GENERATORS)}")
        if name not in made:
            made[name] = GENERATORS[name]().strip()
        return made[name]

    return MARKER.sub(replace, markdown)


# --- mkdocs events ----------------------------------------------------------------------------

def on_startup(**_: Any) -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")  # the CLI's modules are imported: no telemetry
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    notes = (ROOT / "DEVELOPERS.md").read_text()
    files.append(File.generated(config, "developers.md", content=notes))
    return files


def on_page_markdown(markdown: str, **_: Any) -> str:
    return expand(markdown)
