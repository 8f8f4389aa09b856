"""The repository is self-contained: nothing outside tools/ and docs/ reads ../shared (tools/check_no_shared.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_no_shared", ROOT / "tools" / "check_no_shared.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def test_nothing_outside_tools_and_docs_reads_shared():
    assert check.offences(ROOT) == []


def test_the_check_sees_a_read_but_not_a_mention():
    source = '"""Docstrings may say ../shared."""\nfrom pathlib import Path\n# ../shared in a comment\n' \
             'REF = Path(__file__).parents[2] / "shared" / "reference"\nOTHER = "../shared/reference/x.json"\n'
    assert sorted(line for line, _ in check.python_offences(source)) == [4, 5]
    shell = "set -e\ncp ../shared/reference/a .\necho shared  # ../shared\n"
    assert [line for line, _ in check.text_offences(shell)] == [2]


def test_the_reference_copies_say_where_they_come_from():
    sources = (ROOT / "tests" / "data" / "reference" / "SOURCES.md").read_text(encoding="utf-8")
    for folder in ("fhir-r4/examples", "fhir-r4/package", "ig/pdsm/examples", "ig/pdsm4dmp/examples"):
        assert (ROOT / "tests" / "data" / "reference" / folder).is_dir() and f"`{folder}/" in sources, folder
