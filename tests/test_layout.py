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
    run = subprocess.run(
        [str(lint), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 broken." in run.stdout, run.stdout


def environment_reads(source: str) -> list[int]:
    """Lines that read the process environment: `os.environ` (other than written with
    `os.environ.update(...)` or `os.environ[k] = v`), `os.getenv`, or importing them from os."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {alias.name for alias in node.names} & _ENVIRONMENT
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.Attribute)
            and node.attr in _ENVIRONMENT
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            parent = parents.get(node)
            written = (isinstance(parent, ast.Attribute) and parent.attr == "update") or (
                isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)
            )
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
    readers = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("api", "store")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != SETTINGS
        for line in environment_reads(path.read_text())
    }
    assert readers == set(), "read the setting in api/settings.py and pass it on"
    assert environment_reads(SETTINGS.read_text()), "api/settings.py no longer reads it?"


OUTCOME = ROOT / "store" / "fhir" / "outcome.py"


def contract_literals(source: str) -> list[int]:
    """Lines of `source` spelling an error code or "OperationOutcome" as a string literal."""
    from store.fhir.outcome import ISSUE_TYPE

    words = {*ISSUE_TYPE, "OperationOutcome"}
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and node.value in words
    ]


def test_the_error_codes_and_the_outcome_builder_have_one_home() -> None:
    """Codes and OperationOutcomes are spelled in store/fhir/outcome.py only: everywhere else
    names them, so a code cannot drift between modules (four had their own) and every
    OperationOutcome comes from the one builder (three built their own)."""
    assert contract_literals('x = {"resourceType": "OperationOutcome"}; y = "FORBIDDEN"') == [1, 1]
    spelled = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("api", "store")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != OUTCOME
        for line in contract_literals(path.read_text())
    }
    assert spelled == set()


def imported_modules(source: str) -> set[str]:
    """Every module a Python source imports, absolute names only."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "node_modules" not in p.parts)


def test_tests_share_helpers_through_support_only() -> None:
    """A test module imports no other test module or conftest: what two of them share lives in
    tests/support/ (or a conftest's fixtures), so moving or editing one test never breaks
    another."""
    crossing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files(ROOT / "tests")
        for name in imported_modules(path.read_text())
        if name.startswith("tests") and not name.startswith("tests.support")
    }
    assert crossing == set(), "move what is shared to tests/support/"


def test_the_benchmarks_stand_alone() -> None:
    importing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files(ROOT / "bench")
        for name in imported_modules(path.read_text())
        if name == "tests" or name.startswith("tests.")
    }
    assert importing == set(), "bench/ must not import the tests"


DRIVER = ("motor", "pymongo", "mongomock_motor", "mongomock", "bson")
DRIVER_HOME = ROOT / "store" / "mongo" / "client.py"


def test_only_the_client_module_imports_the_driver() -> None:
    """Motor is deprecated upstream: switching to PyMongo's async API must touch one file. The
    import contracts cover api and store; this covers the tests, benchmarks and scripts too."""
    importing = {
        f"{path.relative_to(ROOT)}: {name}"
        for folder in ("api", "store", "tests", "bench", "scripts")
        for path in _python_files(ROOT / folder)
        if path != DRIVER_HOME
        for name in imported_modules(path.read_text())
        if name.split(".")[0] in DRIVER
    }
    assert importing == set(), "reach the driver through store/mongo/client.py"


def test_the_tests_mirror_the_packages() -> None:
    """tests/api/<x> and tests/store/<x> test the package api/<x> or store/<x>; the
    cross-cutting tests say so by where they live (tests/e2e, tests/support, tests/clients)."""
    for top in ("api", "store"):
        for folder in sorted(p for p in (ROOT / "tests" / top).iterdir() if p.is_dir()):
            if folder.name == "__pycache__":
                continue
            assert (ROOT / top / folder.name / "__init__.py").is_file(), (
                f"tests/{top}/{folder.name} mirrors no package {top}/{folder.name}"
            )
    for folder in (
        "api/http",
        "api/graphql",
        "api/access",
        "api/cli",
        "api/transfer",
        "store/fhir",
        "store/mongo",
        "store/interop",
    ):
        assert _python_files(ROOT / "tests" / folder), f"no tests for {folder}"


def test_the_checks_see_every_form_of_import() -> None:
    source = "import tests.api.x\nfrom tests.helpers import y\nfrom . import z\n"
    assert imported_modules(source) == {"tests.api.x", "tests.helpers"}
