"""Content negotiation: which format a response takes and how a request body is read."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_dmp.errors import FhirError

JSON, XML = "json", "xml"
FHIR_JSON, FHIR_XML = "application/fhir+json", "application/fhir+xml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FORM = "application/x-www-form-urlencoded"

_FORMAT_ALIASES = {
    "json": JSON, "application/json": JSON, FHIR_JSON: JSON, "application/json+fhir": JSON,
    "xml": XML, "text/xml": XML, "application/xml": XML, FHIR_XML: XML, "application/xml+fhir": XML,
}
_BODY_TYPES = {**_FORMAT_ALIASES, JSON_PATCH: "json-patch", MERGE_PATCH: "json-patch", FORM: "form"}
del _BODY_TYPES["json"], _BODY_TYPES["xml"]


@dataclass(frozen=True)
class MediaType:
    essence: str
    params: dict[str, str]


def parse_media_type(value: str) -> MediaType:
    essence, *rest = value.split(";")
    params = {}
    for part in rest:
        key, _, val = part.partition("=")
        params[key.strip().lower()] = val.strip().strip('"')
    return MediaType(essence.strip().lower(), params)


def accepted(accept: str) -> list[str]:
    """The media types of an Accept header the client takes (q > 0), most wanted first, ties in its order."""
    ranked = []
    for position, item in enumerate(accept.split(",")):
        media = parse_media_type(item)
        try:
            quality = float(media.params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0 and media.essence:
            ranked.append((-quality, position, media.essence))
    return [essence for _q, _p, essence in sorted(ranked)]


def response_format(format_param: str | None, accept: str | None) -> str:
    """`_format` wins over `Accept`; JSON when the client says nothing; 406 when nothing fits."""
    if format_param:
        fmt = _FORMAT_ALIASES.get(format_param.strip().lower().replace(" ", "+").split(";")[0])
        if fmt is None:
            raise FhirError.of(406, "not-supported", f"_format={format_param!r}: this server speaks "
                               "json and xml")
        return fmt
    if not accept:
        return JSON
    for essence in accepted(accept):
        if essence in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[essence]
        if essence in ("*/*", "application/*"):
            return JSON
        if essence == "text/*":
            return XML
    raise FhirError.of(406, "not-supported", f"Accept: {accept!r}: this server answers "
                       f"{FHIR_JSON} or {FHIR_XML}")


def body_kind(content_type: str | None) -> str:
    """json | xml | json-patch | form; 415 for anything else, or a charset other than UTF-8."""
    if not content_type:
        raise FhirError.of(415, "not-supported", f"A request body needs a Content-Type ({FHIR_JSON} or "
                           f"{FHIR_XML})")
    media = parse_media_type(content_type)
    kind = _BODY_TYPES.get(media.essence)
    if kind is None:
        raise FhirError.of(415, "not-supported", f"Content-Type {media.essence!r} is not supported; use "
                           f"{FHIR_JSON}, {FHIR_XML}, or {JSON_PATCH} or {MERGE_PATCH} for PATCH")
    charset = media.params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise FhirError.of(415, "not-supported", f"charset {charset!r}: FHIR bodies are UTF-8")
    return kind


def content_type_of(fmt: str) -> str:
    return f"{FHIR_XML if fmt == XML else FHIR_JSON};charset=utf-8"
