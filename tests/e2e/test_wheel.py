"""The package works outside its source tree, and the repository from a fresh clone.

- a wheel built from the repository, installed in a fresh virtual environment, run from an empty directory:
  `fhir-dmp load-examples`, `fhir-dmp serve --dev-secret`, `GET /fhir/metadata`, a token from `fhir-dmp token`
  and a read of a loaded example; its data (terminologies/, profiles/, ...) come from the wheel, not the repository;
- `git clone` of the repository (its committed HEAD) into an empty directory, with no ../shared beside it:
  `pip install -e .` and a representative part of the test suite pass there.

The fresh environments get their dependencies from this interpreter's site-packages by a `.pth` line (no download,
and no .pth of this environment runs there, so the editable fhir_dmp of this checkout is not importable there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.serving import free_port
from tests.serving import served as running

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60
CLAIRE_INS = "280017512345678"  # examples/01-dmp-claire-martin.json


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without this checkout's settings or paths."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FHIR_DMP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def _run(args: list[str | Path], cwd: Path, timeout: int = 300, **env: str) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=_clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _fresh_venv(where: Path) -> Path:
    """A venv without pip whose python also sees this interpreter's site-packages (after its own), as plain
    paths: pip, setuptools and the server's dependencies come from there, no .pth of theirs is run."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(purelib) / "zz-outer-site-packages.pth").write_text("".join(f"{p}\n" for p in outer))
    return python



@dataclass
class Installed:
    venv: Path
    python: Path
    fhir_dmp: Path  # the console script
    empty: Path  # an empty working directory


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "node_modules", "*.db", ".venv", "benchmarks"))
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist"], cwd=source)
    wheel = next((tmp / "dist").glob("fhir_dmp-*.whl"))
    shutil.rmtree(source)
    python = _fresh_venv(tmp / "venv")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp)
    empty = tmp / "empty"
    empty.mkdir()
    return Installed(tmp / "venv", python, tmp / "venv" / "bin" / "fhir-dmp", empty)


def test_the_installed_package_is_the_wheel_with_its_data(installed):
    out = _run([installed.python, "-c", "import json, fhir_dmp, fhir_dmp.config as c; "
                "print(json.dumps([fhir_dmp.__file__, str(c.project_dir()), str(c.Settings().habilitation_matrix)]))"],
               cwd=installed.empty)
    module, home, matrix = (Path(p) for p in json.loads(out))
    assert module.is_relative_to(installed.venv), module  # not the editable install of this checkout
    assert home == module.parent / "home" and not home.is_relative_to(ROOT)
    for name in ("terminologies", "profiles", "capability", "examples"):
        assert (home / name).is_dir(), name
    assert (home / "terminologies" / "refused-actors.json").is_file() and matrix.is_file()
    assert _run([installed.fhir_dmp, "load-examples", "--help"], cwd=installed.empty).startswith("Usage:")


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[str]:
    """`fhir-dmp load-examples` then `fhir-dmp serve --dev-secret`, from the empty directory, on SQLite."""
    database_url = f"sqlite:///{installed.empty.parent / 'wheel.db'}"
    loaded = _run([installed.fhir_dmp, "load-examples"], cwd=installed.empty, FHIR_DMP_DATABASE_URL=database_url)
    assert "Traceback" not in loaded
    port = free_port()
    log = installed.empty.parent / "serve.log"
    base = f"http://127.0.0.1:{port}/fhir"
    command = [str(installed.fhir_dmp), "serve", "--dev-secret", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--database-url", database_url]
    with running(command, cwd=installed.empty, env=_clean_env(), log=log, ready_url=f"{base}/metadata",
                seconds=STARTUP_SECONDS):
        yield base
    assert "Traceback" not in log.read_text(), log.read_text()
    assert list(installed.empty.iterdir()) == []  # nothing written into the working directory


def test_the_wheel_serves_the_loaded_examples_from_an_empty_directory(installed, served):
    metadata = requests.get(f"{served}/metadata", timeout=20)
    assert metadata.status_code == 200 and metadata.json()["resourceType"] == "CapabilityStatement"
    token = _run([installed.fhir_dmp, "token", "--actor", "system", "--sub", "wheel-e2e"],
                 cwd=installed.empty).strip()  # signed with the development secret `serve --dev-secret` uses
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    found = requests.get(f"{served}/Patient", params={"identifier": f"urn:oid:1.2.250.1.213.1.4.10|{CLAIRE_INS}"},
                         headers=headers, timeout=20)
    assert found.status_code == 200, found.text
    [entry] = [e for e in found.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]
    read = requests.get(f"{served}/Patient/{entry['resource']['id']}", headers=headers, timeout=20)
    assert read.status_code == 200, read.text
    assert read.json()["identifier"][0]["value"] == CLAIRE_INS
    assert requests.get(f"{served}/Patient/{entry['resource']['id']}", timeout=20).status_code == 401
    # the shipped conformance resources are served from the wheel's data
    assert requests.get(f"{served}/StructureDefinition/dmp-patient", headers=headers, timeout=20).status_code == 200


def test_a_fresh_clone_installs_and_passes_its_tests_without_shared(tmp_path):
    """The README's test command in a clone with nothing beside it (tests what is committed: HEAD)."""
    clone = tmp_path / "fhir-dmp"
    _run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, clone], cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fhir-dmp"]  # no ../shared
    python = _fresh_venv(tmp_path / "venv")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-e", "."],
         cwd=clone)
    where = _run([python, "-c", "import fhir_dmp.config as c; print(c.project_dir())"], cwd=tmp_path).strip()
    assert Path(where) == clone
    out = _run([python, "-m", "pytest", "-x", "tests/test_smoke.py", "tests/test_home.py",
                "tests/test_self_contained.py", "tests/terminology/test_terminology.py", "tests/http/test_auth.py",
                "tests/validation/test_structure.py"], cwd=clone, timeout=300)
    assert " passed" in out and " failed" not in out and " error" not in out, out  # and pytest exited 0
