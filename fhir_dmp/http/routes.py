"""The FHIR endpoints: one catch-all route that parses the request into a `FhirRequest`."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError, bad_request
from fhir_dmp.http import binary, fhirxml
from fhir_dmp.http.negotiate import JSON, body_kind, parse_media_type, response_format
from fhir_dmp.http.render import respond
from fhir_dmp.services import smart
from fhir_dmp.services.identity import caller_from_header
from fhir_dmp.services.requests import FhirResponse, head_of, parse_url

bp = Blueprint("fhir", __name__, url_prefix="/fhir")
_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _ext() -> dict[str, Any]:
    return current_app.extensions["fhir_dmp"]


def base_url() -> str:
    configured = _ext()["settings"].base_url
    return (configured or request.host_url.rstrip("/") + "/fhir").rstrip("/")


@bp.route("/.well-known/smart-configuration", methods=["GET", "HEAD"])
def smart_configuration() -> Response:
    """SMART discovery: JSON whatever the Accept header (SMART App Launch 2.0, Conformance); no token needed."""
    document = smart.configuration(smart.smart_issuer(_ext()["keys"]))
    return Response(json.dumps(document, indent=2), 200, mimetype="application/json",
                    headers={"Cache-Control": "max-age=300"})


@bp.route("/metadata", methods=_ALL)
def metadata() -> Response:
    fmt = response_format(request.args.get("_format"), request.headers.get("Accept"))
    if request.method not in ("GET", "HEAD"):
        raise FhirError.of(405, "not-supported", f"{request.method} is not supported on /metadata",
                           headers={"Allow": "GET, HEAD"})
    statement = _ext()["capability"].build(base_url(), request.args.get("mode"))
    return respond(FhirResponse(200, statement), fmt, pretty=_pretty())


@bp.route("", methods=_ALL, strict_slashes=False)
@bp.route("/<path:path>", methods=_ALL)
def fhir(path: str = "") -> Response:
    accept = request.headers.get("Accept")
    native = binary.is_binary_read(request.method, path, request.args.get("_format"))  # ITI-68: maybe raw bytes
    fmt = _error_format(accept) if native else response_format(request.args.get("_format"), accept)
    ext = _ext()
    caller = caller_from_header(request.headers.get("Authorization"), ext["keys"])
    method = "GET" if request.method == "HEAD" else request.method
    url = f"{path}?{request.query_string.decode('utf-8', 'replace')}" if request.query_string else path
    pipeline = ext["pipeline"]
    base = base_url()
    pipeline.admit(caller, head_of(method, url, base))  # refused: 403 before the body is read
    body, content_type, query = _read_body(method)
    prefer = _prefer()
    req = parse_url(
        method, url, body=body, content_type=content_type, if_match=request.headers.get("If-Match"),
        if_none_exist=request.headers.get("If-None-Exist"), if_none_match=request.headers.get("If-None-Match"),
        strict=prefer.get("handling") == "strict", base_url=base, prefer_return=prefer.get("return"),
    )
    if query:
        req = replace(req, query=req.query + tuple(query))
    result = pipeline.handle(caller, req)
    if native and result.status == 200 and isinstance(result.body, dict):
        fmt = binary.representation(accept, str(result.body.get("contentType") or ""))
        if fmt == binary.NATIVE:
            return binary.raw_response(result, head=request.method == "HEAD")
    return respond(result, fmt, prefer_return=prefer.get("return"), pretty=_pretty())


def _error_format(accept: str | None) -> str:
    """The format of anything but the raw document (a refusal, a 304) when the client accepts a document type."""
    try:
        return response_format(None, accept)
    except FhirError:
        return JSON


def _read_body(method: str) -> tuple[Any, str, list[tuple[str, str]]]:
    """(parsed body, its media type, extra search parameters from a form-encoded _search)."""
    length = request.content_length
    if method in ("GET", "DELETE"):
        return None, "", []
    raw = _body_bytes()
    if not raw and not length:
        if method == "POST" and (request.path.endswith("/_search") or "/$" in request.path):
            return None, "", []  # a search, or an operation without parameters (Patient/[id]/$reopen)
        raise bad_request(f"{method} needs a request body", code="required")
    kind = body_kind(request.headers.get("Content-Type"))
    media = parse_media_type(request.headers.get("Content-Type", "")).essence
    if kind == "form":
        if not request.path.endswith("/_search"):
            raise FhirError.of(415, "not-supported", "Form-encoded bodies are only for POST [type]/_search")
        return None, media, parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    if kind == "xml":
        return fhirxml.xml_to_json(raw), media, []
    try:
        return fhirjson.loads(raw), media, []
    except ValueError as exc:
        raise bad_request(str(exc), code="structure") from exc


def _body_bytes() -> bytes:
    """The request body, a chunked one (no Content-Length) counted against the size limit too: Werkzeug stops
    reading such a body at the limit without a word, which would store the first MAX_CONTENT_LENGTH bytes of a
    larger one (a Content-Length over the limit is refused by Werkzeug before any read)."""
    limit = request.max_content_length
    if request.content_length is not None or limit is None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=False)  # without a terminated input Werkzeug gives an empty stream
    stream, chunks, size = request.environ["wsgi.input"], [], 0
    while chunk := stream.read(min(64 * 1024, limit + 1 - size)):  # at most limit + 1 bytes in all
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
    return b"".join(chunks)


def _prefer() -> dict[str, str]:
    out = {}
    for header in request.headers.getlist("Prefer"):
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def _pretty() -> bool:
    return request.args.get("_pretty", "").lower() == "true"
