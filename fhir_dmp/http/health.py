"""Liveness and readiness, for load balancers and orchestrators: no token, no trace, no body to read.

- `GET /healthz`: 200 while the process serves (it says nothing of the database);
- `GET /readyz`: 200 when the database answers `SELECT 1` within 3 s, else 503 with `Retry-After` and an
  OperationOutcome saying why (take the instance out of rotation, do not restart it).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from fhir_dmp.errors import FhirError
from fhir_dmp.http.negotiate import JSON, content_type_of, response_format
from fhir_dmp.http.render import error_response, serialise
from fhir_dmp.services.admin import ping
from fhir_dmp.services.content import information

bp = Blueprint("health", __name__)
RETRY_AFTER_SECONDS = 5


def _format() -> str:
    try:
        return response_format(request.args.get("_format"), request.headers.get("Accept"))
    except FhirError:
        return JSON


def _answer(diagnostics: str) -> Response:
    fmt = _format()
    body = serialise(information(diagnostics), fmt)  # HEAD too: Content-Length is GET's, Werkzeug sends no body
    response = Response(body, status=200, content_type=content_type_of(fmt))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    return _answer("alive")


@bp.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> Response:
    why = ping(current_app.extensions["fhir_dmp"]["db"])
    if why is None:
        return _answer("ready: the database answers")
    error = FhirError.of(503, "transient", f"not ready: {why}", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    response = error_response(error, _format())
    response.headers["Cache-Control"] = "no-store"
    return response
