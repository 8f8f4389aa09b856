"""Service results and errors -> Flask responses, in the negotiated format."""

from __future__ import annotations

import re

from flask import Response

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError
from fhir_dmp.http import fhirxml
from fhir_dmp.http.negotiate import XML, content_type_of
from fhir_dmp.services.content import information
from fhir_dmp.services.requests import FhirResponse

_SURROGATE = re.compile("[\ud800-\udfff]")


def serialise(resource: dict | fhirjson.Raw, fmt: str, pretty: bool = False) -> bytes:
    """Compact JSON writes stored pieces (`fhirjson.raw`) verbatim; XML and pretty JSON walk them parsed."""
    if fmt == XML:
        return fhirxml.json_to_xml(fhirjson.materialize(resource))
    text = fhirjson.dumps_pretty(fhirjson.materialize(resource)) if pretty else fhirjson.dumps(resource)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\\ud800", echoed or stored): not UTF-8, so U+FFFD
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def respond(result: FhirResponse, fmt: str, *, prefer_return: str | None = None, pretty: bool = False) -> Response:
    body = result.body
    if isinstance(body, dict) and result.status in (200, 201) and _is_write(result):
        if prefer_return == "minimal":
            body = None
        elif prefer_return == "OperationOutcome":
            body = information("Created" if result.status == 201 else "Updated")
    response = Response(status=result.status)
    for name, value in result.headers.items():
        response.headers[name] = value
    if isinstance(body, dict | fhirjson.Raw):
        # HEAD: the body is serialised all the same, so that Content-Length is GET's (RFC 9110 8.6); Werkzeug
        # sends no body for a HEAD request
        response.set_data(serialise(body, fmt, pretty))
        response.headers["Content-Type"] = content_type_of(fmt)
    elif isinstance(body, bytes):
        response.set_data(body)
    else:
        del response.headers["Content-Type"]  # no body, no media type
    return response


def _is_write(result: FhirResponse) -> bool:
    return "Location" in result.headers


def error_response(error: FhirError, fmt: str) -> Response:
    response = Response(serialise(error.outcome(), fmt), status=error.status,
                        content_type=content_type_of(fmt))
    for name, value in error.headers.items():
        response.headers[name] = value
    return response
