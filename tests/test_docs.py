"""The docs hold to the code: every option of every command on the page that documents it, every
graph output and metadata field, every dataset of the results file, and no dead relative link.

The README is the front page (the two commands first, about a screen and a half); the reference
lives in docs/, one page per topic.
"""

from __future__ import annotations

import re

import click
import pytest
from paths import DOCS, README, ROOT

from export.cli import main as export_main
from scorer.cli.main import main as score_main
from scorer.contract import SCHEMA_VERSION, STATISTICS, ModelMetadata
from scorer.results.schema import dataset_descriptions, spec

PAGES = {path.name: path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md"))}
COMMANDS = {
    "mcd-export": (export_main, "export.md"),
    "mcd-score score": (score_main.commands["score"], "scoring.md"),
    "mcd-score compare": (score_main.commands["compare"], "scoring.md"),
    "mcd-score table": (score_main.commands["table"], "scoring.md"),
    "mcd-score report": (score_main.commands["report"], "report.md"),
    "mcd-score doctor": (score_main.commands["doctor"], "gpu.md"),
}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def options_of(command: click.Command) -> list[str]:
    names = []
    for param in command.params:
        if isinstance(param, click.Option):
            names.extend(o for o in param.opts + param.secondary_opts
                         if o.startswith("--") and o != "--help")
    return names


def test_every_command_is_covered() -> None:
    assert set(score_main.commands) == {name.split()[1] for name in COMMANDS if " " in name}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_on_the_page_of_its_command(name: str) -> None:
    command, page = COMMANDS[name]
    missing = [o for o in options_of(command) if f"`{o}" not in PAGES[page]]
    assert not missing, f"{name} options missing from docs/{page}: {missing}"


def test_the_readme_starts_with_the_two_commands_and_stays_a_front_page() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```")[1]
    assert "scripts/demo.sh" in first_block and "scripts/test.sh" in first_block
    assert len(text.splitlines()) <= 150
    for page in PAGES:
        assert f"(docs/{page})" in text, f"the README does not link docs/{page}"


def markdown_files():
    return [README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path) -> None:
    dead = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            dead.append(target)
    assert not dead, f"{path.name} links to missing files: {dead}"


@pytest.mark.parametrize("kind", ["probabilities", "multilabel", "values"])
def test_the_results_page_documents_every_dataset(kind: str) -> None:
    for name, dtype, _, _ in dataset_descriptions(kind, save_passes=True, has_labels=True):
        row = f"| `{name}` | {dtype} | {spec(name).shape_text()} |"  # the dimension named class
        assert row in PAGES["results.md"], f"docs/results.md lacks the schema row {row!r}"


def test_the_graph_page_documents_every_metadata_field_and_output() -> None:
    page = PAGES["graph.md"]
    assert f"schema version {SCHEMA_VERSION}" in page
    for field in ModelMetadata.__dataclass_fields__:
        assert f"`{field}`" in page, f"metadata field {field!r} is not in docs/graph.md"
    for output in {name for names in STATISTICS.values() for name in names}:
        assert f"`{output}`" in page, f"graph output {output!r} is not in docs/graph.md"


def test_the_link_finder_finds_links() -> None:
    assert LINK.findall("see [the page](docs/x.md) and [site](https://a.b)") == ["docs/x.md",
                                                                               "https://a.b"]
