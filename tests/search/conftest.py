"""The search engine's tests run on generic R4 data: resources the DMP profiles would refuse (a Patient with no
birth date, a DocumentReference with no author) are what `:missing` and chains are tested on, so these
tests load them with profile enforcement off (`Settings.enforce_profiles`)."""

from __future__ import annotations

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.storage.db import Database
from tests.conftest import SECRET


@pytest.fixture
def settings(database: Database) -> Settings:
    return Settings(database_url=database.url, jwt_secret=SECRET, max_body_bytes=1024 * 1024, enforce_profiles=False)
