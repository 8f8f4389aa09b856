"""FHIR R4 XML <-> FHIR JSON (http://hl7.org/fhir/R4/xml.html, http://hl7.org/fhir/R4/json.html).

The server works on JSON dicts; XML is only a wire format, so both directions go through the R4 element table
(`fhirxml_types`) rather than a generic XML mapping: XML order, value attributes, `_name` siblings for primitive
ids/extensions, number/boolean types and nested resources all come from the definitions. This module writes
(JSON -> XML, refusing with a `FhirError` 400 what it cannot write) and is the package's entry point; reading,
the hardened parser and how a body's problems become one round of errors, is in `fhirxml_read`.
"""

from __future__ import annotations

import html.entities
import operator
import re
from typing import Any

from lxml import etree

from fhir_dmp.errors import bad_request
from fhir_dmp.http.fhirxml_read import (
    DTD_MARKERS,
    FHIR_NS,
    MAX_DEPTH,
    XHTML_NS,
    hardened_parser,
    rebuild_xhtml,
    too_deep,
    xml_to_json,
)
from fhir_dmp.http.fhirxml_types import (
    COMPLEX,
    PRIMITIVE_KINDS,
    RESOURCE,
    Elem,
    Model,
    TypeInfo,
    format_primitive,
    model,
)

__all__ = ["FHIR_NS", "XHTML_NS", "json_to_xml", "xml_safe", "xml_to_json"]

_XDIV = "{" + XHTML_NS + "}div"
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ATTR_SPECIAL = re.compile('[&<>"\t\n\r]')
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_HTML_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset(("amp", "lt", "gt", "quot", "apos"))
_ORDER = operator.attrgetter("order")


def json_to_xml(resource: dict) -> bytes:
    """Serialise a FHIR JSON resource dict as FHIR XML (UTF-8, declaration, definition order).
    Raises FhirError 400 (`invalid`) on unknown elements, wrong JSON types or a bad narrative."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>']
    _write_resource(resource, model(), parts, "", 0, True)
    return xml_safe("".join(parts)).encode("utf-8")


def xml_safe(text: str) -> str:
    """`text` with U+FFFD for each character no XML 1.0 document can carry (controls but TAB CR LF, surrogates,
    U+FFFE, U+FFFF). Writes refuse them (validation/structure.py), but an error may echo them from a URL, and
    data stored before that check may hold them: no answer may become unwritable (500s, 400s on every search)."""
    return _NOT_XML_CHAR.sub("\ufffd", text) if _NOT_XML_CHAR.search(text) else text


def _attr(value: str) -> str:
    return value if _ATTR_SPECIAL.search(value) is None else value.translate(_ATTR_ESCAPES)


def _write_resource(res: Any, m: Model, parts: list[str], path: str, depth: int, root: bool = False) -> None:
    rtype = res.get("resourceType") if isinstance(res, dict) else None
    if rtype not in m.resources:
        raise bad_request(f"Not a resource (unknown or missing resourceType {rtype!r})", path or None)
    parts.append(f'<{rtype} xmlns="{FHIR_NS}">' if root else f"<{rtype}>")
    _write_children(res, m.types[rtype], m, parts, rtype, depth + 1, True)
    parts.append(f"</{rtype}>")


def _write_complex(
    name: str, obj: Any, t: TypeInfo, m: Model, parts: list[str], path: str, depth: int
) -> None:
    if not isinstance(obj, dict) or not obj:
        raise bad_request(f"{path} must be a non-empty JSON object", path)
    head = f"<{name}"
    for e in t.attrs:
        value = obj.get(e.name)
        if value is not None:
            head += f' {e.name}="{_attr(format_primitive(e.kind, value, path + "." + e.name))}"'
    start = len(parts)
    _write_children(obj, t, m, parts, path, depth + 1, False)
    if len(parts) == start:
        parts.append(head + "/>")
    else:
        parts.insert(start, head + ">")
        parts.append(f"</{name}>")


def _write_children(
    obj: dict, t: TypeInfo, m: Model, parts: list[str], path: str, depth: int, is_res: bool
) -> None:
    if depth > MAX_DEPTH:
        raise too_deep(path)
    elems = t.elems
    present: dict[str, Elem] = {}
    for key in obj:
        if is_res and key == "resourceType":
            continue
        underscore = key[:1] == "_"
        base = key[1:] if underscore else key
        e = elems.get(base)
        if e is None or (underscore and (e.kind not in PRIMITIVE_KINDS or e.attr)):
            raise bad_request(f"Unknown element {key!r} at {path}", f"{path}.{key}")
        if not e.attr:
            present[base] = e
    for e in sorted(present.values(), key=_ORDER) if len(present) > 1 else present.values():
        name = e.name
        cpath = f"{path}.{name}"
        value = obj.get(name)
        if e.kind in PRIMITIVE_KINDS:
            _write_primitives(e, value, obj.get("_" + name), m, parts, cpath, depth)
            continue
        for item in _items(e, value, cpath):
            if e.kind == COMPLEX:
                _write_complex(name, item, m.types[e.type], m, parts, cpath, depth)
            elif e.kind == RESOURCE:
                parts.append(f"<{name}>")
                _write_resource(item, m, parts, cpath, depth)
                parts.append(f"</{name}>")
            else:
                parts.append(_text_to_div(item, cpath))


def _items(e: Elem, value: Any, path: str) -> list:
    if e.array:
        if not isinstance(value, list) or not value:
            raise bad_request(f"{path} must be a non-empty JSON array", path)
        return value
    if isinstance(value, list):
        raise bad_request(f"{path} must not be a JSON array", path)
    return [value]


def _write_primitives(
    e: Elem, values: Any, extras: Any, m: Model, parts: list[str], path: str, depth: int
) -> None:
    """Merge `name` and `_name` (aligned lists for arrays) into elements with value/id/extension."""
    if not e.array:
        pairs = [(values, extras)]
    else:
        vals = _items(e, values, path) if values is not None else None
        exts = _items(e, extras, "_" + path) if extras is not None else None
        if vals is not None and exts is not None and len(vals) != len(exts):
            raise bad_request(f"{path} and its _{e.name} list differ in length", path)
        pairs = list(zip(vals or [None] * len(exts), exts or [None] * len(vals), strict=True))
    for value, extra in pairs:
        if value is None and extra is None:
            raise bad_request(f"{path} has an entry with neither value nor extension", path)
        head = f"<{e.name}"
        if extra is not None:
            if not isinstance(extra, dict) or not extra or not extra.keys() <= {"id", "extension"}:
                raise bad_request(f"_{e.name} may only hold id and extension at {path}", path)
            if "id" in extra:
                head += f' id="{_attr(format_primitive("str", extra["id"], path + ".id"))}"'
        if value is not None:
            head += f' value="{_attr(format_primitive(e.kind, value, path))}"'
        ext = extra.get("extension") if extra is not None else None
        if ext is None:
            parts.append(head + "/>")
            continue
        parts.append(head + ">")
        ext_type = m.types["Extension"]
        for item in _items(ext_type.elems["extension"], ext, path + ".extension"):
            _write_complex("extension", item, ext_type, m, parts, path + ".extension", depth + 1)
        parts.append(f"</{e.name}>")


def _text_to_div(text: Any, path: str) -> str:
    """Re-parse the narrative (hardened, no DTD) so only a well-formed XHTML div reaches the output."""
    if not isinstance(text, str) or not text:
        raise bad_request(f"{path} must be a string holding an XHTML <div>", path)
    if "&" in text:
        text = _HTML_ENTITY.sub(_numeric_entity, text)
    if "<!" in text and any(marker.decode() in text for marker in DTD_MARKERS):
        raise bad_request(f"DTDs are not allowed in the narrative at {path}", path)
    try:
        div = etree.fromstring(text.encode("utf-8"), hardened_parser())
    except (etree.XMLSyntaxError, ValueError, UnicodeEncodeError) as exc:
        raise bad_request(f"The narrative is not well-formed XHTML at {path}: {exc}", path) from None
    if div.tag != _XDIV or any(node.prefix is not None for node in div.iter()):
        if etree.QName(div).localname != "div":
            raise bad_request(f"The narrative must be a <div> element at {path}", path)
        div = rebuild_xhtml(div)
    return etree.tostring(div, encoding="unicode", with_tail=False)


def _numeric_entity(match: re.Match) -> str:
    """HTML named entities (&nbsp;) are common in JSON narratives but undefined in XML."""
    name = match.group(1)
    if name in _XML_ENTITIES or name not in html.entities.name2codepoint:
        return match.group(0)
    return f"&#{html.entities.name2codepoint[name]};"
