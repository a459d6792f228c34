"""The docs: a short README whose two commands come first, and a site whose reference parts are
generated from the code (docs/hooks/reference.py), so that a new flag, column or format shows
up in the docs without anyone remembering to write it. CI builds the site with
`mkdocs build --strict` (.ci/run), which fails on a broken link or anchor."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from types import ModuleType

import pytest

from audiobatch.flows.cli import build_parser, main
from audiobatch.tasks.inputs.manifest import NARRATION_FORMATS
from audiobatch.tasks.outputs.datasets import SCHEMAS
from tests.helpers.data import ROOT


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs/hooks/reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_hook()


def test_readme_is_short_and_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    first_block = readme.split("```")[1]
    assert "python3 dev.py demo" in first_block and "python3 dev.py test" in first_block
    # the README's contract with CI: its test command is what .ci/run ends with, after the docs
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "python3 dev.py test"
    assert "python3 dev.py docs build" in ci[:-1]


def test_readme_links_reach_existing_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)", readme)
    assert any(target.startswith("docs/") for target in targets)
    missing = [target for target in targets if "://" not in target and not (ROOT / target).exists()]
    assert missing == []


def help_flags(argv: list[str]) -> set[str]:
    """The flags `audiobatch ... --help` prints, read from its text."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--help"]) == 0
    # the option column: "  --flag VALUE" or "  -x, --flag", at the start of a line
    return set(re.findall(r"^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)", printed.getvalue(), re.MULTILINE)) - {"--help"}


def section_of(text: str, command: str) -> str:
    start = text.index(f"## {command}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.mark.parametrize("argv", [["transcribe"], ["narrate"], ["podcast"], ["estimate"], ["serve"],
                                  ["submit"], ["inbox"], ["deploy", "podcast"], ["deploy", "inbox"],
                                  ["runs"], ["report"]])
def test_command_reference_lists_every_flag_that_help_prints(argv: list[str]) -> None:
    section = section_of(reference.cli_reference(), " ".join(["audiobatch", *argv]))
    assert help_flags(argv) <= set(re.findall(r"`(--[a-z][a-z0-9-]*)", section))


def test_command_reference_has_every_subcommand() -> None:
    text = reference.cli_reference()
    headings = re.findall(r"^## audiobatch (.+)$", text, re.MULTILINE)
    top = next(a for a in build_parser()._actions if a.dest == "command")
    for name in top.choices:
        assert any(h == name or h.startswith(f"{name} ") for h in headings), name
    assert {"deploy podcast", "deploy transcribe", "deploy narrate", "deploy inbox"} <= set(headings)
    assert "`--out OUT` | output root" in text and "(default: outputs)" in text  # defaults shown


def test_dataset_reference_has_every_column_with_its_meaning() -> None:
    text = reference.dataset_schemas()
    for name, schema in SCHEMAS.items():
        section = text[text.index(f"### {name}\n"):]
        section = section[:section.find("\n### ", 1)] if "\n### " in section[1:] else section
        for field in schema:
            row = next((line for line in section.splitlines() if line.startswith(f"| `{field.name}` |")), None)
            assert row is not None, f"{name}.{field.name} is missing from the docs"
            assert "not described yet" not in row, (
                f"{name}.{field.name}: say what it means in docs/hooks/columns.py")


def test_a_note_for_a_column_the_code_lacks_fails_the_build(monkeypatch) -> None:
    monkeypatch.setitem(reference.columns.COLUMNS, "items", {"no_such_column": "gone"})
    with pytest.raises(ValueError, match="items.no_such_column"):
        reference.dataset_schemas()


def test_manifests_page_names_every_narration_format_the_reader_accepts() -> None:
    page = reference.expand((ROOT / "docs/manifests.md").read_text())
    format_row = next(line for line in page.splitlines() if line.startswith("| `format` |"))
    assert all(f"`{fmt}`" in format_row for fmt in NARRATION_FORMATS) and "`m4b`" in format_row
    assert ".epub" in page and "<!--" not in page


def test_an_unknown_marker_fails_the_build() -> None:
    with pytest.raises(ValueError, match="unknown docs marker"):
        reference.expand("text <!-- generated: no-such-thing --> text")


def test_stage_packages_are_drawn_from_their_own_docstrings() -> None:
    table = reference.stage_packages()
    packages = sorted(p.parent.name for p in (ROOT / "tasks").glob("*/__init__.py"))
    assert all(f"`tasks/{name}/`" in table for name in packages)
    # levels follow the imports: audio at the bottom, run below the jobs that use it
    level = {m[1]: int(m[0]) for m in re.findall(r"^\| (\d+) \| `tasks/([a-z_]+)/`", table, re.MULTILINE)}
    assert level["audio"] == 1 and level["run"] < min(level["transcription"], level["narration"])
    assert level["run"] < level["speakers"] < level["transcription"]  # a step of transcription


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages and {page for page in pages if page not in nav} == set()
    assert "developers.md" in nav  # DEVELOPERS.md, added by the hook
