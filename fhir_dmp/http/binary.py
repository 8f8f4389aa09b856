"""ITI-68 Retrieve Document: a Binary read answers the document itself, in its own content type, unless the
client asks for the FHIR resource (R4 binary.html "Serving Binary Resources using the RESTful API"; ANS PDSm
flux 07/08: the content type served is the one the document was filed with).

Which representation (decided per Accept item, best quality first):
- `_format`, or an explicit FHIR type (`application/fhir+json`, `application/fhir+xml`): the Binary resource;
- the document's own content type, `type/*`, `*/*`, or no Accept at all: the raw bytes;
- `application/json`, `application/xml`, `text/xml` that are not the document's own type: the Binary resource
  in that format (so a CDA filed as `application/xml` is served raw to `Accept: application/xml`);
- nothing acceptable: 406.

The bytes are decoded from the stored base64 in chunks and streamed: the document is never held decoded whole.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator

from flask import Response

from fhir_dmp.errors import FhirError
from fhir_dmp.http.negotiate import FHIR_JSON, FHIR_XML, JSON, XML, accepted, parse_media_type
from fhir_dmp.services.requests import FhirResponse

NATIVE = "native"
_EXPLICIT_FHIR = {FHIR_JSON: JSON, "application/json+fhir": JSON, FHIR_XML: XML, "application/xml+fhir": XML}
_GENERIC = {"application/json": JSON, "application/xml": XML, "text/xml": XML}
_CHUNK = 64 * 1024  # base64 characters per decoded piece (a multiple of 4)
_SPACE = re.compile(r"\s")
_BINARY_READ = re.compile(r"^Binary/[A-Za-z0-9\-.]{1,64}(/_history/[^/]+)?/?$")


def is_binary_read(method: str, path: str, format_param: str | None) -> bool:
    """A GET/HEAD of `Binary/{id}` (or a version) without `_format`: the document may be served raw."""
    return method in ("GET", "HEAD") and not format_param and bool(_BINARY_READ.match(path))


def representation(accept: str | None, content_type: str) -> str:
    """NATIVE, JSON or XML for a Binary whose document is of `content_type`; 406 when nothing fits."""
    if not accept or not accept.strip():
        return NATIVE
    own = parse_media_type(content_type or "application/octet-stream").essence
    for essence in accepted(accept):
        if essence in _EXPLICIT_FHIR:
            return _EXPLICIT_FHIR[essence]
        if essence in ("*/*", own) or (essence.endswith("/*") and own.startswith(essence[:-1])):
            return NATIVE
        if essence in _GENERIC:
            return _GENERIC[essence]
    raise FhirError.of(406, "not-supported", f"Accept: {accept!r}: this document is {own} (served as is), or "
                       f"ask for the Binary resource as {FHIR_JSON} or {FHIR_XML}")


def raw_response(result: FhirResponse, *, head: bool) -> Response:
    """The document's bytes with its content type and the version headers (ETag, Last-Modified), its length,
    and its governing DocumentReference in X-Security-Context (R4)."""
    binary = result.body
    assert isinstance(binary, dict)
    data = binary.get("data") if isinstance(binary.get("data"), str) else ""
    if _SPACE.search(data):  # base64 may be wrapped: decode it without the line breaks
        data = "".join(data.split())
    length = len(data) // 4 * 3 - (data[-2:].count("=") if data else 0)
    response = Response(b"" if head else _decoded(data), status=200,
                        content_type=binary.get("contentType") or "application/octet-stream")
    for name, value in result.headers.items():
        response.headers[name] = value
    context = binary.get("securityContext")
    if isinstance(context, dict) and isinstance(context.get("reference"), str):
        response.headers["X-Security-Context"] = context["reference"]
    response.headers["Content-Length"] = str(length)
    return response


def _decoded(data: str) -> Iterator[bytes]:
    for start in range(0, len(data), _CHUNK):
        try:
            yield base64.b64decode(data[start:start + _CHUNK], validate=True)
        except binascii.Error:  # stored data is validated base64 on write; never expected
            return
