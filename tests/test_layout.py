"""The layout's rules hold (docs/ARCHITECTURE.md, "Layout"): the import contracts of
.importlinter, which `make test` checks with lint-imports and this test checks however the suite
is run, and the one rule a contract cannot see, that only api/settings.py reads the environment."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "api" / "settings.py"
_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}


def test_every_import_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 broken." in run.stdout, run.stdout


def environment_reads(source: str) -> list[int]:
    """Lines that read the process environment: `os.environ` (other than written with
    `os.environ.update(...)` or `os.environ[k] = v`), `os.getenv`, or importing them from os."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                {alias.name for alias in node.names} & _ENVIRONMENT:
            lines.append(node.lineno)
        if isinstance(node, ast.Attribute) and node.attr in _ENVIRONMENT and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            parent = parents.get(node)
            written = (isinstance(parent, ast.Attribute) and parent.attr == "update") or (
                isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store))
            if not written:
                lines.append(node.lineno)
    return lines


def test_the_check_sees_each_way_of_reading_the_environment() -> None:
    assert environment_reads("import os\nos.getenv('X')\n") == [2]
    assert environment_reads("import os\nx = os.environ['X']\n") == [2]
    assert environment_reads("import os\nx = 'X' in os.environ\n") == [2]
    assert environment_reads("from os import environ\n") == [1]
    assert environment_reads("import os\nos.environ.update(X='1')\nos.environ['Y'] = '2'\n") == []


def test_only_settings_reads_the_environment() -> None:
    readers = {f"{path.relative_to(ROOT)}:{line}"
               for package in ("api", "store") for path in sorted((ROOT / package).rglob("*.py"))
               if path != SETTINGS for line in environment_reads(path.read_text())}
    assert readers == set(), "read the setting in api/settings.py and pass it on"
    assert environment_reads(SETTINGS.read_text()), "api/settings.py no longer reads it?"


OUTCOME = ROOT / "store" / "fhir" / "outcome.py"


def contract_literals(source: str) -> list[int]:
    """Lines of `source` spelling an error code or "OperationOutcome" as a string literal."""
    from store.fhir.outcome import ISSUE_TYPE

    words = {*ISSUE_TYPE, "OperationOutcome"}
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and node.value in words]


def test_the_error_codes_and_the_outcome_builder_have_one_home() -> None:
    """Codes and OperationOutcomes are spelled in store/fhir/outcome.py only: everywhere else
    names them, so a code cannot drift between modules (four had their own) and every
    OperationOutcome comes from the one builder (three built their own)."""
    assert contract_literals('x = {"resourceType": "OperationOutcome"}; y = "FORBIDDEN"') \
        == [1, 1]
    spelled = {f"{path.relative_to(ROOT)}:{line}"
               for package in ("api", "store") for path in sorted((ROOT / package).rglob("*.py"))
               if path != OUTCOME for line in contract_literals(path.read_text())}
    assert spelled == set()
