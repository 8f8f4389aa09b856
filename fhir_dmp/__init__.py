"""fhir-dmp: a FHIR R4 server for a French-style shared medical record (DMP)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_dmp.version import __version__

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """gunicorn entry point (`fhir_dmp:create_app()`); imported lazily so the core never loads Flask."""
    from fhir_dmp.http.app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["__version__", "create_app"]
