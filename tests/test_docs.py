"""The README documents every command option, graph input/output and HDF5 dataset."""

from pathlib import Path

import click
import pytest

from export.cli import main as export_main
from scorer.cli import main as score_main
from scorer.contract import SCHEMA_VERSION, ModelMetadata
from scorer.schema import dataset_descriptions, spec

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def options_of(command: click.Command) -> list[str]:
    names = []
    for param in command.params:
        if isinstance(param, click.Option):
            names.extend(o for o in param.opts if o.startswith("--") and o != "--help")
    return names


COMMANDS = {
    "mcd-export": export_main,
    "mcd-score score": score_main.commands["score"],
    "mcd-score compare": score_main.commands["compare"],
    "mcd-score table": score_main.commands["table"],
    "mcd-score report": score_main.commands["report"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_readme_lists_every_option(name: str) -> None:
    missing = [o for o in options_of(COMMANDS[name]) if o not in README]
    assert not missing, f"{name} options missing from README: {missing}"


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "scripts/demo.sh" in first_block and "scripts/test.sh" in first_block


@pytest.mark.parametrize("kind", ["probabilities", "multilabel", "values"])
def test_readme_documents_every_dataset(kind: str) -> None:
    for name, dtype, _, _ in dataset_descriptions(kind, save_passes=True, has_labels=True):
        row = f"| `{name}` | {dtype} | {spec(name).shape_text()} |"  # the dimension named class
        assert row in README, f"README lacks the schema row {row!r}"


def test_readme_documents_every_metadata_field() -> None:
    assert f"schema version {SCHEMA_VERSION}" in README
    for field in ModelMetadata.__dataclass_fields__:
        assert f"`{field}`" in README, f"metadata field {field!r} is not in the README"
