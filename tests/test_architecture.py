"""The layout the architecture promises (docs/architecture.md): no import circle anywhere in the package, modules
of a readable size. (Which layer may import which is import-linter's: `.importlinter`, run by `.ci/run`.)"""

from __future__ import annotations

from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "fhir_dmp"
MAX_LINES = 420  # "modules under ~400 lines"


def test_no_import_circle() -> None:
    graph = grimp.build_graph("fhir_dmp")
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                circles.append(" -> ".join((module, *back)))
    assert circles == [], "\n".join(circles)


def test_modules_stay_readable() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"
