"""Fail when a file of the repository outside tools/ and docs/ reads ../shared (the reference collection kept
beside the repository): the package, its tests and its benchmarks must work from a fresh clone.

Python files: every string literal but docstrings (comments and docstrings may mention ../shared) that is the path
component `shared` or holds `../shared`. Other code (shell, CI, Dockerfile, configuration, JavaScript): any
`../shared` or `shared/reference` outside a `#` comment. Data and prose (.md, .json, .csv, .xml, .txt) are not
code and are not read.

Run: `python tools/check_no_shared.py [ROOT]`; exit 1 and one line per offence when something reads ../shared.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = ("tools/", "docs/")
PROSE_OR_DATA = {".md", ".json", ".csv", ".xml", ".txt", ".rst", ".tgz", ".gz", ".zip", ".png", ".pdf", ".mako"}
PATH_IN_STRING = re.compile(r"(^|[/\\])\.\.[/\\]shared([/\\]|$)|^shared([/\\]|$)")
PATH_IN_TEXT = re.compile(r"\.\.[/\\]shared\b|\bshared/reference\b")


def files(root: Path) -> list[str]:
    """The repository's files (tracked or not, but not ignored), relative, with `/`."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard"],
                             check=True, capture_output=True, text=True).stdout
        return sorted({line for line in out.splitlines() if (root / line).is_file()})
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): walk it
        skip = {".git", "build", "dist", "node_modules", "__pycache__", ".venv"}
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and not skip & set(p.relative_to(root).parts))


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def python_offences(source: str) -> Iterator[tuple[int, str]]:
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                and PATH_IN_STRING.search(node.value.strip())):
            yield node.lineno, node.value


def text_offences(source: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source.splitlines(), 1):
        if PATH_IN_TEXT.search(re.sub(r"(^|\s)#.*", "", line)):  # a shell-style comment is a mention
            yield number, line.strip()


def offences(root: Path = ROOT) -> list[str]:
    found = []
    for name in files(root):
        if name.startswith(ALLOWED) or Path(name).suffix.lower() in PROSE_OR_DATA:
            continue
        try:
            source = (root / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        check = python_offences if name.endswith(".py") else text_offences
        found += [f"{name}:{line}: reads ../shared ({text!r})" for line, text in check(source)]
    return found


def main(argv: list[str]) -> int:
    found = offences(Path(argv[1]) if len(argv) > 1 else ROOT)
    for line in found:
        print(line)
    if found:
        print("the repository must not read ../shared outside tools/ and docs/: copy what is needed into it"
              " (tests/data/reference/, with its source in SOURCES.md)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
