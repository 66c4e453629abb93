"""Rules of the layout that import-linter does not check: where datastore keys are named and
where the environment is read."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("identity", "recommender", "live")
SETTINGS = ROOT / "live" / "web" / "settings.py"


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def key_literals(path: Path) -> list[str]:
    """String constants (f-string parts included) that start a datastore key name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("nr:"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def environment_reads(path: Path) -> list[str]:
    """Reads of ``os.environ`` or ``os.getenv`` (assignments into ``os.environ`` are not
    reads: the CLI hands settings to uvicorn's worker processes that way)."""
    tree = ast.parse(path.read_text())
    stores = {id(n.value) for n in ast.walk(tree)
              if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "os" and node.attr in ("environ", "getenv") \
                and id(node) not in stores:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_datastore_keys_are_named_only_in_keys_modules() -> None:
    """Every ``nr:`` key name of every package is written in that package's keys module."""
    stray = [hit for path in sources() if path.name != "keys.py" for hit in key_literals(path)]
    assert not stray, "key names outside a keys module:\n" + "\n".join(stray)


def test_every_package_names_its_keys() -> None:
    """The check above looks at something: each package has keys modules with key names."""
    for pkg in PACKAGES:
        named = [hit for p in (ROOT / pkg).rglob("keys.py") for hit in key_literals(p)]
        assert named, f"{pkg} has no keys module naming a key"


def test_the_environment_is_read_only_by_the_settings() -> None:
    """Only ``live/web/settings.py`` reads the environment; everything else is given its
    settings."""
    reads = [hit for path in sources() if path != SETTINGS for hit in environment_reads(path)]
    assert not reads, "environment read outside the settings module:\n" + "\n".join(reads)
    assert environment_reads(SETTINGS), "the settings module should read the environment"
