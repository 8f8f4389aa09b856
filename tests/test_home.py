"""How the data directory (terminologies/, profiles/, capability/, examples/) is found: fhir_dmp/_home.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_dmp import _home
from fhir_dmp.config import Settings, project_dir

ROOT = Path(__file__).resolve().parents[1]


def test_an_editable_install_reads_the_top_level_folders(monkeypatch):
    monkeypatch.delenv("FHIR_DMP_HOME", raising=False)
    assert project_dir() == ROOT  # no fhir_dmp/home/ in the source tree: only a built wheel has one
    assert Settings().home == ROOT
    assert all((ROOT / name).is_dir() for name in _home.FOLDERS)


def test_fhir_dmp_home_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("FHIR_DMP_HOME", str(tmp_path))
    assert project_dir() == tmp_path
    settings = Settings()
    assert settings.home == tmp_path
    assert settings.habilitation_matrix == tmp_path / "terminologies" / "habilitation-matrix.csv"


def test_the_copy_shipped_in_the_package_comes_before_the_source_tree(monkeypatch, tmp_path):
    """What an installed wheel sees: fhir_dmp/home/ beside the modules (simulated by pointing the package at it)."""
    monkeypatch.delenv("FHIR_DMP_HOME", raising=False)
    (tmp_path / _home.BUNDLED).mkdir()
    monkeypatch.setattr(_home.resources, "files", lambda package: tmp_path)
    assert project_dir() == tmp_path / _home.BUNDLED


def test_nothing_found_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("FHIR_DMP_HOME", raising=False)
    monkeypatch.setattr(_home.resources, "files", lambda package: tmp_path)
    monkeypatch.setattr(_home, "__file__", str(tmp_path / "fhir_dmp" / "_home.py"))
    with pytest.raises(_home.HomeNotFound, match="FHIR_DMP_HOME"):
        project_dir()
