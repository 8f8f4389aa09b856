"""FHIR R4 XML -> FHIR JSON (http://hl7.org/fhir/R4/xml.html): the reading side of `fhirxml`.

Untrusted XML is parsed with every libxml2 expansion feature off and any DTD refused, so billion-laughs and XXE
documents are a 400, never an expansion or a read. XML that is not well-formed, or no FHIR resource at all (another
namespace, an unknown resource type, a name that would change the JSON's meaning: `resourceType`, `_x`), is a
`FhirError` 400 (`structure` for syntax, `invalid` for content). Everything else is one round of errors
(docs/conformance.md): what FHIR refuses is carried into the JSON in the shape JSON would have for it (a bad value as
its string, a repeated element as an array, `<active/>` as `"_active": {}`, an unknown element or attribute as a key,
text content as a `#text` key) so that the structural walk reports it, with its expression, as it does for JSON,
together with the body's profile errors in one 422.
"""

from __future__ import annotations

import copy
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
    model,
    read_value,
)

__all__ = ["DTD_MARKERS", "FHIR_NS", "MAX_DEPTH", "XHTML_NS", "hardened_parser", "rebuild_xhtml", "too_deep",
           "xml_to_json"]

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
MAX_DEPTH = 100  # FHIR elements deep; libxml2 itself stops at 256 without huge_tree
DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST")
_NS = "{" + FHIR_NS + "}"
_NSLEN = len(_NS)
_XDIV = "{" + XHTML_NS + "}div"
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_DECL_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)")
_ELEMENT_NAME = re.compile(r"(?!resourceType\Z)[a-z][A-Za-z0-9]*\Z")
_PRIMITIVE_KEYS = frozenset(("value", "id", "extension"))  # what a primitive's `_name` object may hold, and value
_TEXT = "#text"  # the DOM's name of a text node: a key no FHIR element has, for the walk to report text content
_local = threading.local()


class _RefuseExternal(etree.Resolver):
    """Belt and braces: libxml2 reads an external DTD subset for some option mixes (collect_ids=False
    does it even with load_dtd=False), so any attempt to fetch anything fails the parse."""

    def resolve(self, url, pubid, context):
        raise ValueError("external resources are not allowed in FHIR XML")


def hardened_parser() -> etree.XMLParser:
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


def too_deep(path: str) -> FhirError:
    """The 400 for elements nested deeper than MAX_DEPTH (the path shortened: it can be long)."""
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
    if any(marker in body for marker in DTD_MARKERS):
        raise _structure("DTDs and entity declarations are not allowed in FHIR XML")
    try:
        root = etree.fromstring(data, hardened_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise _structure(f"XML is not well-formed: {exc}") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise _structure("DTDs and entity declarations are not allowed in FHIR XML")
    return root


def xml_to_json(data: bytes) -> dict:
    """Parse a FHIR XML resource into the FHIR JSON dict (decimal -> Decimal, integer types -> int,
    boolean -> bool, other primitives -> str). Raises FhirError 400 when it is no FHIR resource at all; what R4
    refuses in it is carried for the structural walk to report (module docstring)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    root = _parse(bytes(data))
    return _read_resource(root, model(), "", 0)


def _fhir_name(el: etree._Element, path: str) -> str:
    if not el.tag.startswith(_NS):
        raise bad_request(f"Element {el.tag!r} is not in the FHIR namespace {FHIR_NS} at {path or '/'}", path)
    return el.tag[_NSLEN:]


def _keep_text(out: dict[str, Any], text: str | None) -> None:
    """Text content (FHIR XML has none: values are `value=` attributes) kept as `#text`, an unknown element."""
    if text is not None and not text.isspace():
        out.setdefault(_TEXT, text.strip())


def _keep_unknown(out: dict[str, Any], name: str, value: Any, taken: Any, what: str, path: str) -> None:
    """An unknown element or attribute kept for the walk, unless its name would change the JSON's meaning
    (`resourceType`, `_birthDate`, an element's name given as an attribute): that is no FHIR at all, a 400."""
    if not _ELEMENT_NAME.match(name) or name in taken:
        raise bad_request(f"Unknown {what} {name!r} at {path}", f"{path}.{name}" if what == "element" else path)
    out.setdefault(name, value)


def _unknown_value(el: etree._Element) -> Any:
    """An unknown element's value if it has one, for the walk to say what it is; else {}."""
    return el.get("value", {}) if not len(el) else {}


def _read_resource(el: etree._Element, m: Model, path: str, depth: int) -> dict:
    rtype = _fhir_name(el, path)
    if rtype not in m.resources:
        raise bad_request(f"Unknown resource type {rtype!r}" + (f" at {path}" if path else ""), path or None)
    return {"resourceType": rtype, **_read_complex(el, m.types[rtype], m, rtype, depth + 1)}


def _read_complex(el: etree._Element, t: TypeInfo, m: Model, path: str, depth: int) -> dict:
    """Children grouped by name, then emitted in definition order with `_name` after `name`. An element that does
    not repeat but is repeated becomes an array, which the walk reports as it does in JSON."""
    if depth > MAX_DEPTH:
        raise too_deep(path)
    elems = t.elems
    got: dict[str, tuple[Elem, list]] = {}
    unknown: dict[str, Any] = {}  # unknown elements and attributes, text content: kept for the structural walk
    for key, value in el.items():
        e = elems.get(key)
        if e is not None and e.attr:
            got[key] = (e, [read_value(e.kind, value)])
        elif not key.startswith(_XSI):
            _keep_unknown(unknown, key, value, elems, "attribute", path)
    _keep_text(unknown, el.text)
    for child in el:
        name = _fhir_name(child, path) if child.tag != _XDIV else "div"
        _keep_text(unknown, child.tail)
        e = elems.get(name)
        cpath = f"{path}.{name}"
        if e is None or e.attr:
            _keep_unknown(unknown, name, _unknown_value(child), elems, "element", path)
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
        got.setdefault(name, (e, []))[1].append(value)
    out: dict[str, Any] = {}
    for name, (e, values) in sorted(got.items(), key=lambda kv: kv[1][0].order):
        many = e.array or len(values) > 1
        if e.kind not in PRIMITIVE_KINDS or e.attr:
            out[name] = values if many else values[0]
            continue
        vals, extras = [v for v, _ in values], [x for _, x in values]
        if any(v is not None for v in vals):
            out[name] = vals if many else vals[0]
        if any(x is not None for x in extras):
            out["_" + name] = extras if many else extras[0]
    return out | unknown


def _read_primitive(el: etree._Element, e: Elem, m: Model, path: str, depth: int) -> tuple[Any, dict | None]:
    """(value, {"id", "extension"} or None): the second half becomes the `_name` sibling; `<active/>` is
    (None, {}), `"_active": {}`, which the walk reports as an element with neither value nor children."""
    value = None
    extra: dict[str, Any] = {}
    for key, text in el.items():
        if key == "value":
            value = read_value(e.kind, text)
        elif key == "id":
            extra["id"] = text
        elif not key.startswith(_XSI):
            _keep_unknown(extra, key, text, _PRIMITIVE_KEYS, "attribute", path)
    _keep_text(extra, el.text)
    exts = []
    for child in el:
        _keep_text(extra, child.tail)
        name = _fhir_name(child, path)
        if name == "extension":
            exts.append(_read_complex(child, m.types["Extension"], m, path + ".extension", depth + 1))
        else:
            _keep_unknown(extra, name, _unknown_value(child), _PRIMITIVE_KEYS, "element", path)
    if exts:
        extra["extension"] = exts
    return value, extra if extra or value is None else None


def _only_child(el: etree._Element, path: str) -> etree._Element:
    if el.attrib or len(el) != 1:
        raise bad_request(f"{path} must contain exactly one resource and nothing else", path)
    if not ((el.text or " ") + (el[0].tail or " ")).isspace():  # around the resource: whitespace only
        raise bad_request(f"Text content is not allowed around the resource at {path}", path)
    return el[0]


def _div_to_text(div: etree._Element) -> str:
    """The div as JSON wants it: its own xmlns only, never the FHIR document's declarations."""
    if any(node.prefix is not None for node in div.iter()):
        div = rebuild_xhtml(div)
    else:
        div = copy.deepcopy(div)
        etree.cleanup_namespaces(div)
    return etree.tostring(div, encoding="unicode", with_tail=False)


def rebuild_xhtml(src: etree._Element, parent: etree._Element | None = None) -> etree._Element:
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
        rebuild_xhtml(child, el)
    return el
