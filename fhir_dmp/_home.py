"""Where the server's data directory is: ONE directory holding `terminologies/`, `profiles/`, `capability/` and
`examples/` (code elsewhere reads `settings.home / "terminologies" / ...`).

In order:
1. `FHIR_DMP_HOME`, when set: an override (a deployment's own terminologies, habilitation matrix or examples);
2. `fhir_dmp/home/` inside the installed package: a wheel (or `pip install .`) ships the four top-level folders
   there as package data (copied by `setup.py`'s build step), read through `importlib.resources`;
3. the source tree, the folder above the package: an editable install (`pip install -e .`) or a checkout,
   where the four folders sit at the repository's top level.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

FOLDERS = ("terminologies", "profiles", "capability", "examples")
BUNDLED = "home"  # fhir_dmp/home/ in a built wheel; never in the source tree


class HomeNotFound(RuntimeError):
    pass


def find_home() -> Path:
    override = os.environ.get("FHIR_DMP_HOME")
    if override:
        return Path(override)
    bundled = resources.files("fhir_dmp").joinpath(BUNDLED)
    if bundled.is_dir():
        if not isinstance(bundled, Path):  # e.g. imported from a zip: the readers need real files
            raise HomeNotFound(f"fhir-dmp's data ({bundled}) is not a directory on disk: set FHIR_DMP_HOME")
        return bundled
    source_tree = Path(__file__).resolve().parent.parent
    if all((source_tree / name).is_dir() for name in FOLDERS):
        return source_tree
    raise HomeNotFound(f"fhir-dmp cannot find its data folders ({', '.join(FOLDERS)}): neither in the installed"
                       f" package nor beside it in {source_tree}; reinstall it, or set FHIR_DMP_HOME")
