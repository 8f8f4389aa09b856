"""One build step on top of setup.cfg: ship the top-level data folders inside the wheel.

`terminologies/`, `profiles/`, `capability/` and `examples/` stay at the repository's top level (where the project
keeps them); a built wheel (`pip install .`, `pip wheel .`, `python -m build`) carries a copy of them as package data
under `fhir_dmp/home/`, which `fhir_dmp/_home.py` finds through `importlib.resources`. An editable install copies
nothing: it reads the folders in place. The sdist carries them through MANIFEST.in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HOME_FOLDERS = ("terminologies", "profiles", "capability", "examples")


class BuildPyWithHome(build_py):
    """build_py, then copy the data folders to <build_lib>/fhir_dmp/home/ (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "fhir_dmp" / "home"
        shutil.rmtree(target, ignore_errors=True)  # no file a previous build left and the source has since lost
        for name in HOME_FOLDERS:
            self.copy_tree(name, str(target / name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        target = Path(self.build_lib) / "fhir_dmp" / "home"
        return outputs + [str(target / p) for name in HOME_FOLDERS for p in Path(name).rglob("*") if p.is_file()]


setup(cmdclass={"build_py": BuildPyWithHome})
