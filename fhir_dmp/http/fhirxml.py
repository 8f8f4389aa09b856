"""FHIR R4 XML <-> FHIR JSON (http://hl7.org/fhir/R4/xml.html, http://hl7.org/fhir/R4/json.html).

The server works on JSON dicts; XML is only a wire format, so both directions go through the R4 element table
(`fhirxml_types`) rather than a generic XML mapping: XML order, value attributes, `_name` siblings for primitive
ids/extensions, number/boolean types and nested resources all come from the definitions. Untrusted XML is parsed with
every libxml2 expansion feature off and any DTD refused, so billion-laughs and XXE documents are a 400, never an
expansion or a read. Malformed XML is a `FhirError` 400 (`structure` for syntax, `invalid` for content); an unknown
element is kept, for the structural walk to report it with the body's other errors in one 422.
"""

from __future__ import annotations

import copy
import html.entities
import operator
import re
import threading
from typing import Any

from lxml import etree

from fhir_dmp.errors import FhirError, bad_request
from fhir_dmp.http.fhirxml_types import (
    COMPLEX,
    PRIMITIVE_KINDS,
    RESOURCE,
    XHTML,
    Elem,
    Model,
    TypeInfo,
    format_primitive,
    model,
    parse_primitive,
)

__all__ = ["FHIR_NS", "XHTML_NS", "json_to_xml", "xml_safe", "xml_to_json"]

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
MAX_DEPTH = 100  # FHIR elements deep; libxml2 itself stops at 256 without huge_tree
_NS = "{" + FHIR_NS + "}"
_NSLEN = len(_NS)
_XDIV = "{" + XHTML_NS + "}div"
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_DECL_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)")
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST")
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ATTR_SPECIAL = re.compile('[&<>"\t\n\r]')
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_HTML_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset(("amp", "lt", "gt", "quot", "apos"))
_ORDER = operator.attrgetter("order")
_ELEMENT_NAME = re.compile(r"(?!resourceType\Z)[a-z][A-Za-z0-9]*\Z")
_local = threading.local()


class _RefuseExternal(etree.Resolver):
    """Belt and braces: libxml2 reads an external DTD subset for some option mixes (collect_ids=False
    does it even with load_dtd=False), so any attempt to fetch anything fails the parse."""

    def resolve(self, url, pubid, context):
        raise ValueError("external resources are not allowed in FHIR XML")


def _parser() -> etree.XMLParser:
    """One hardened parser per thread (lxml parsers must not be shared across threads)."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            dtd_validation=False,
            remove_comments=True,
            remove_pis=True,
        )
        parser.resolvers.add(_RefuseExternal())
    return parser


def _too_deep(path: str) -> FhirError:
    short = path if len(path) < 120 else path[: path.index(".")] + "..." + path[-80:]
    return bad_request(f"Elements nested too deeply (more than {MAX_DEPTH} levels) at {short}", short)


def _structure(msg: str, path: str | None = None) -> FhirError:
    return bad_request(msg, path, code="structure")


def _parse(data: bytes) -> etree._Element:
    """Well-formed, UTF-8 and DTD-free, or a 400; the byte scan keeps DTDs from reaching libxml2."""
    body = data[3:] if data[:3] == b"\xef\xbb\xbf" else data
    if body.lstrip()[:1] != b"<" or b"\x00" in body:  # NULs: UTF-16/32, which would hide a DOCTYPE
        raise _structure("Not an XML document (FHIR XML must be UTF-8 and start with '<')")
    declared = _DECL_ENCODING.match(body)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise _structure("FHIR XML must be encoded in UTF-8")
    if any(marker in body for marker in _DTD_MARKERS):
        raise _structure("DTDs and entity declarations are not allowed in FHIR XML")
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise _structure(f"XML is not well-formed: {exc}") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise _structure("DTDs and entity declarations are not allowed in FHIR XML")
    return root


def xml_to_json(data: bytes) -> dict:
    """Parse a FHIR XML resource into the FHIR JSON dict (decimal -> Decimal, integer types -> int,
    boolean -> bool, other primitives -> str). Raises FhirError 400 on anything malformed."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    root = _parse(bytes(data))
    return _read_resource(root, model(), "", 0)


def _fhir_name(el: etree._Element, path: str) -> str:
    if not el.tag.startswith(_NS):
        raise bad_request(f"Element {el.tag!r} is not in the FHIR namespace {FHIR_NS} at {path or '/'}", path)
    return el.tag[_NSLEN:]


def _no_text(text: str | None, path: str) -> None:
    if text is not None and not text.isspace():
        raise bad_request(f"Text content is not allowed in FHIR elements (use value=) at {path}", path)


def _read_resource(el: etree._Element, m: Model, path: str, depth: int) -> dict:
    rtype = _fhir_name(el, path)
    if rtype not in m.resources:
        raise bad_request(f"Unknown resource type {rtype!r}" + (f" at {path}" if path else ""), path or None)
    return {"resourceType": rtype, **_read_complex(el, m.types[rtype], m, rtype, depth + 1)}


def _read_complex(el: etree._Element, t: TypeInfo, m: Model, path: str, depth: int) -> dict:
    """Children grouped by name, then emitted in definition order with `_name` after `name`."""
    if depth > MAX_DEPTH:
        raise _too_deep(path)
    elems = t.elems
    got: dict[str, Any] = {}
    unknown: dict[str, Any] = {}  # the unknown elements, kept for the structural walk to report
    for key, value in el.items():
        e = elems.get(key)
        if e is not None and e.attr:
            got[key] = (e, parse_primitive(e.kind, value, f"{path}@{key}"))
        elif not key.startswith(_XSI):
            raise bad_request(f"Unknown attribute {key!r} at {path}", path)
    _no_text(el.text, path)
    for child in el:
        name = _fhir_name(child, path) if child.tag != _XDIV else "div"
        _no_text(child.tail, path)
        e = elems.get(name)
        cpath = f"{path}.{name}"
        if e is None or e.attr:
            if not _ELEMENT_NAME.match(name):  # `resourceType`, `_birthDate`: they would change the JSON's meaning
                raise bad_request(f"Unknown element {name!r} at {path}", cpath)
            unknown[name] = child.get("value", {}) if not len(child) else {}  # for the structural walk
            continue
        if e.kind == XHTML:
            if child.tag != _XDIV:
                raise bad_request(f"{cpath} must be an XHTML <div> in namespace {XHTML_NS}", cpath)
            value: Any = _div_to_text(child)
        elif e.kind == COMPLEX:
            value = _read_complex(child, m.types[e.type], m, cpath, depth + 1)
        elif e.kind == RESOURCE:
            value = _read_resource(_only_child(child, cpath), m, cpath, depth + 1)
        else:
            value = _read_primitive(child, e, m, cpath, depth + 1)
        if e.array:
            got.setdefault(name, (e, []))[1].append(value)
        elif name in got:
            raise bad_request(f"Element {name!r} repeats but is not a list at {path}", cpath)
        else:
            got[name] = (e, value)
    if not got and not unknown:
        raise bad_request(f"Empty element (it needs a value or children) at {path}", path)
    if t.has_choices:
        _check_choices(got, path)
    out: dict[str, Any] = {}
    for name, (e, value) in sorted(got.items(), key=lambda kv: kv[1][0].order):
        if e.kind not in PRIMITIVE_KINDS or e.attr:
            out[name] = value
        elif e.array:
            if any(v is not None for v, _ in value):
                out[name] = [v for v, _ in value]
            if any(x is not None for _, x in value):
                out["_" + name] = [x for _, x in value]
        else:
            if value[0] is not None:
                out[name] = value[0]
            if value[1] is not None:
                out["_" + name] = value[1]
    return out | unknown


def _check_choices(got: dict[str, Any], path: str) -> None:
    seen: dict[str, str] = {}
    for name, (e, _) in ((n, v) for n, v in got.items() if v[0].choice):
        if e.choice in seen:
            raise bad_request(f"Only one of {seen[e.choice]} and {name} is allowed at {path}", path)
        seen[e.choice] = name


def _read_primitive(el: etree._Element, e: Elem, m: Model, path: str, depth: int) -> tuple[Any, dict | None]:
    """(value, {"id", "extension"} or None): the second half becomes the `_name` sibling."""
    value = None
    extra: dict[str, Any] = {}
    for key, text in el.items():
        if key == "value":
            value = parse_primitive(e.kind, text, path)
        elif key == "id":
            extra["id"] = text
        else:
            raise bad_request(f"Unknown attribute {key!r} at {path}", path)
    _no_text(el.text, path)
    if len(el):
        ext_type = m.types["Extension"]
        exts = []
        for child in el:
            _no_text(child.tail, path)
            if _fhir_name(child, path) != "extension":
                raise bad_request(f"A primitive may only contain extension elements at {path}", path)
            exts.append(_read_complex(child, ext_type, m, path + ".extension", depth + 1))
        extra["extension"] = exts
    if value is None and not extra:
        raise bad_request(f"Element has no value attribute and no extension at {path}", path)
    return value, extra or None


def _only_child(el: etree._Element, path: str) -> etree._Element:
    if el.attrib or len(el) != 1:
        raise bad_request(f"{path} must contain exactly one resource and nothing else", path)
    _no_text((el.text or " ") + (el[0].tail or " "), path)  # around the resource: whitespace only
    return el[0]


def _div_to_text(div: etree._Element) -> str:
    """The div as JSON wants it: its own xmlns only, never the FHIR document's declarations."""
    if any(node.prefix is not None for node in div.iter()):
        div = _rebuild_xhtml(div)
    else:
        div = copy.deepcopy(div)
        etree.cleanup_namespaces(div)
    return etree.tostring(div, encoding="unicode", with_tail=False)


def _rebuild_xhtml(src: etree._Element, parent: etree._Element | None = None) -> etree._Element:
    """Copy with XHTML as the default namespace (un-namespaced tags are moved into it)."""
    tag = src.tag if src.tag.startswith("{") else "{" + XHTML_NS + "}" + src.tag
    attrib = dict(src.attrib)
    if parent is None:
        el = etree.Element(tag, attrib, nsmap={None: XHTML_NS})
    else:
        el = etree.SubElement(parent, tag, attrib)
        el.tail = src.tail
    el.text = src.text
    for child in src:
        _rebuild_xhtml(child, el)
    return el


# --- JSON -> XML ---------------------------------------------------------------------------------


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
        raise _too_deep(path)
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
    if "<!" in text and any(marker.decode() in text for marker in _DTD_MARKERS):
        raise bad_request(f"DTDs are not allowed in the narrative at {path}", path)
    try:
        div = etree.fromstring(text.encode("utf-8"), _parser())
    except (etree.XMLSyntaxError, ValueError, UnicodeEncodeError) as exc:
        raise bad_request(f"The narrative is not well-formed XHTML at {path}: {exc}", path) from None
    if div.tag != _XDIV or any(node.prefix is not None for node in div.iter()):
        if etree.QName(div).localname != "div":
            raise bad_request(f"The narrative must be a <div> element at {path}", path)
        div = _rebuild_xhtml(div)
    return etree.tostring(div, encoding="unicode", with_tail=False)


def _numeric_entity(match: re.Match) -> str:
    """HTML named entities (&nbsp;) are common in JSON narratives but undefined in XML."""
    name = match.group(1)
    if name in _XML_ENTITIES or name not in html.entities.name2codepoint:
        return match.group(0)
    return f"&#{html.entities.name2codepoint[name]};"
