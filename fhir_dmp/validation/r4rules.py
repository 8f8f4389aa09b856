"""The R4 rules the structural walk (`structure.py`) leaves out, which the HL7 validator checks on every resource:

- primitive formats: each value against the regex of its R4 type (`data/r4-primitives.json`: an `id` of 65
  characters, a `code` with two spaces, an empty string);
- `ele-1` (an element has a value or children, an `_x` primitive extension holder too) and `ext-1` (an
  extension has a value or sub-extensions, not both);
- extensions: a definition must be known (the core ones, `data/r4-extensions.json`, and those the server
  ships in `profiles/`), or its url be in a domain whose extensions are accepted unseen
  (`data/extension-domains.json`, as the validator's `allowed-extension-domain`); a known one is used only
  in its contexts, with one of its value types, and a complex one only with its own sub-extensions;
- example urls (`example.org`, `acme.com`) where a url is followed, not merely named: `url` values and
  extension urls (an identifier's `system` is a namespace, a `meta.profile` a claim), unless it is a canonical
  this server ships;
- the narrative: `txt-1` (the XHTML subset of R4's narrative.html: no script, no event attribute, no unknown
  element) and `txt-2` (some non-whitespace content); markdown and strings without embedded HTML tags;
- codes (`r4codes.py`): a Coding of a code system the server ships (the code exists, its display is the code
  system's), the syntax of SNOMED CT and LOINC codes, and the vital signs profiles R4 requires of an
  Observation of a vital sign (the magic LOINC code, the vital-signs category, the UCUM units).

Rules that are data live in `fhir_dmp/data/` (sources in each file). One walk over the resource, dictionary
lookups only: this runs on every write, next to the structural walk.
"""

from __future__ import annotations

import json
import re
from functools import cache
from html.entities import name2codepoint
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from fhir_dmp.errors import Issue
from fhir_dmp.terminology.store import Conformance
from fhir_dmp.validation import r4codes
from fhir_dmp.validation.structure import element_shape, required_codes

_DATA = Path(__file__).resolve().parent.parent / "data"
_SKIPPED_REGEX = frozenset({"boolean", "integer", "decimal", "positiveInt", "unsignedInt", "base64Binary"})
_URL_TYPES = frozenset({"url"})
_EXAMPLE_HOSTS = ("example.org", "acme.com")  # what the HL7 validator flags (not example.com, not .example)
_XHTML = "http://www.w3.org/1999/xhtml"
_HTML_TAG = re.compile(r"<\s*/?\s*(script|iframe|object|embed|form|input|img|a|div|span|p|b|i|u|br|table|tr|td|"
                       r"style|link|meta|body|html|head|svg|button|textarea|select|option|ul|ol|li|h[1-6]|font|"
                       r"center|strong|em|pre|code|blockquote|hr|frame|frameset|applet|base)(\s[^<>]*)?/?\s*>",
                       re.IGNORECASE)
_MARKDOWN_TAG = re.compile(r"(?<!\\)<[A-Za-z!/][^\s<>]?")
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_BASES = {"Element", "Base"}
_RESOURCE_BASES = {"Resource", "DomainResource"}


@cache
def _data(name: str) -> dict:
    return json.loads((_DATA / name).read_text(encoding="utf-8"))


@cache
def _regexes() -> dict[str, re.Pattern]:
    return {t: re.compile(r) for t, r in _data("r4-primitives.json")["types"].items() if t not in _SKIPPED_REGEX}


def extension_rule(sd: dict) -> dict:
    """What the validator needs of an extension's StructureDefinition: contexts, value types (none: complex),
    the urls of its sub-extensions (`tools/build_r4_rules.py` writes the core ones with it)."""
    elements = (sd.get("snapshot") or sd.get("differential") or {}).get("element", [])
    value = next((e for e in elements if e.get("id") == "Extension.value[x]"), None)
    types = [t["code"] for t in (value or {}).get("type", [])] if value and value.get("max") != "0" else []
    children = sorted({e.get("fixedUri") for e in elements if e.get("path") == "Extension.extension.url"
                       and e.get("fixedUri")})
    slices = {e.get("id"): e.get("min", 0) for e in elements
              if e.get("path") == "Extension.extension" and e.get("sliceName")}
    required = sorted({e["fixedUri"] for e in elements if e.get("path") == "Extension.extension.url"
                       and e.get("fixedUri") and slices.get(e.get("id", "").rsplit(".", 1)[0], 0) >= 1})
    return {"context": [{"type": c.get("type"), "expression": c.get("expression")} for c in sd.get("context", [])],
            "value": types, "extensions": children, "required": required}


_SHIPPED: dict[int, tuple[Conformance, dict[str, dict], frozenset[str]]] = {}


def _shipped(conf: Conformance) -> tuple[dict[str, dict], frozenset[str]]:
    """The extensions and canonical urls `conf` ships, computed once per store."""
    held = _SHIPPED.get(id(conf))
    if held is None or held[0] is not conf:
        extensions = {sd["url"]: extension_rule(sd) for sd in conf.all("StructureDefinition")
                      if sd.get("type") == "Extension"}
        urls = frozenset(url for (_, url) in conf.by_url)
        held = (conf, extensions, urls)
        _SHIPPED[id(conf)] = held
    return held[1], held[2]


def r4_issues(conf: Conformance, resource: dict) -> list[Issue]:
    """Every issue of the rules above; [] for a resource that breaks none. Never raises on a resource of any
    shape (the structural walk reports what is not R4 at all)."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return []
    walk = _Walk(conf)
    walk.resource(resource, resource["resourceType"])
    return walk.out


class _Walk:
    def __init__(self, conf: Conformance) -> None:
        self.conf = conf
        self.extensions, self.canonicals = _shipped(conf)
        self.out: list[Issue] = []

    def issue(self, code: str, text: str, where: str) -> None:
        self.out.append(Issue(code, text, (where,)))

    def resource(self, node: dict, path: str) -> None:
        rtype = node.get("resourceType")
        if not isinstance(rtype, str) or element_shape(rtype, "resourceType") is None:
            return
        self.element(node, rtype, path, rtype, rtype)
        if rtype == "Observation":
            self.vital_signs(node, path)

    def element(self, node: dict, type_name: str, path: str, context: str, rtype: str) -> None:
        """A complex element (or resource) of `type_name` at `path`; `context` is its path without indexes."""
        for key, value in node.items():
            if key == "resourceType":
                continue
            primitive_ext = key.startswith("_")
            name = key[1:] if primitive_ext else key
            shape = element_shape(type_name, name)
            if shape is None:
                continue  # not R4: the structural walk says so
            child_type, _ = shape
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                where = f"{path}.{name}[{i}]" if isinstance(value, list) else f"{path}.{name}"
                if item is None:
                    continue
                if primitive_ext:
                    self.primitive_holder(node, name, item, i if isinstance(value, list) else None, where,
                                          type_name, f"{context}.{name}", rtype)
                elif child_type == "Resource":
                    if isinstance(item, dict):
                        self.resource(item, where)
                elif child_type[:1].islower():
                    self.primitive(item, child_type, where)
                elif isinstance(item, dict):
                    self.complex(item, child_type, where, f"{context}.{name}", rtype, name)

    def complex(self, item: dict, child_type: str, where: str, context: str, rtype: str, name: str) -> None:
        if not any(k != "id" for k in item):
            self.issue("invariant", "Constraint failed: ele-1: All FHIR elements must have a @value or children",
                       where)
        if name in ("extension", "modifierExtension"):
            self.extension(item, where, context.rsplit(".", 1)[0], rtype)
        if child_type == "Narrative":
            self.narrative(item, where)
        elif child_type == "Coding":
            self.coding(item, where)
        self.element(item, child_type, where, context, rtype)

    def primitive_holder(self, node: dict, name: str, holder: Any, index: int | None, where: str,
                         holder_type: str, context: str, rtype: str) -> None:
        """`_x`: the id and extensions of primitive `x`; ele-1: a value or an extension."""
        if not isinstance(holder, dict):
            return
        value = node.get(name)
        if index is not None:
            value = value[index] if isinstance(value, list) and index < len(value) else None
        if value is None and not holder.get("extension"):
            self.issue("invariant", "Constraint failed: ele-1: All FHIR elements must have a @value or children",
                       where)
        for i, ext in enumerate(holder.get("extension") or ()):
            if isinstance(ext, dict):
                self.complex(ext, "Extension", f"{where}.extension[{i}]", f"{context}.extension", rtype, "extension")
        if value is None and required_codes(holder_type, name) is not None:
            self.issue("code-invalid", "No code provided, and a code is required from the value set", where)

    # -- primitives --------------------------------------------------------------------------------------------
    def primitive(self, value: Any, type_name: str, where: str) -> None:
        if not isinstance(value, str):
            return
        regex = _regexes().get(type_name)
        if regex is not None and not regex.fullmatch(value):
            shown = value if len(value) <= 60 else value[:57] + "..."
            self.issue("value", f"{shown!r} is not a valid {type_name}"
                       + (f" (R4: {len(value)} characters, at most 64)" if type_name == "id" and len(value) > 64
                          else ""), where)
        if type_name in _URL_TYPES and value not in self.canonicals:
            self.example_url(value, where)
        elif type_name == "markdown" and "<" in value and (tag := _MARKDOWN_TAG.search(value)):
            self.issue("invalid", f"The markdown contains what appears to be an embedded HTML tag starting at "
                       f"{tag.group()!r}: markdown is not HTML (escape the '<' as '\\<')", where)
        elif type_name == "string" and "<" in value and (tag := _HTML_TAG.search(value)):
            self.issue("invalid", f"The string contains an embedded HTML tag ({tag.group()!r}), which is refused "
                       "for security reasons", where)

    def example_url(self, value: str, where: str) -> None:
        if value not in self.canonicals:
            host = (urlsplit(value).hostname or "") if "://" in value else ""
            if any(host == h or host.endswith("." + h) for h in _EXAMPLE_HOSTS):
                self.issue("invalid", f"Example URLs are not allowed in this context ({value})", where)

    # -- extensions --------------------------------------------------------------------------------------------
    def extension(self, ext: dict, where: str, context: str, rtype: str, parent: dict | None = None) -> None:
        url = ext.get("url")
        if not isinstance(url, str):
            return
        has_value = any(k.startswith("value") for k in ext)
        if has_value and ext.get("extension"):
            self.issue("invariant", "Constraint failed: ext-1: Must have either extensions or value[x], not both",
                       where)
        if "://" not in url and not url.startswith("urn:"):
            if _type_at(context) != "Extension":
                self.issue("invalid", f"Extension.url must be an absolute URL, not {url!r} (only a sub-extension's "
                           "url is relative)", where)
            return  # a sub-extension's local name: its parent checks it
        self.example_url(url, f"{where}.url")
        rule = self.extensions.get(url) or _data("r4-extensions.json")["extensions"].get(url)
        if rule is None:
            host = urlsplit(url).hostname or ""
            accepted = _data("extension-domains.json")
            if not any(host == d or host.endswith("." + d) for d in accepted["domains"]) and not any(
                    re.match(pattern, url) for pattern in accepted["patterns"]):
                self.issue("structure", f"The extension {url} could not be found so is not allowed here", where)
            return
        if not _in_context(rule["context"], context, rtype):
            allowed = ", ".join(str(c.get("expression")) for c in rule["context"])
            self.issue("structure", f"The extension {url} is not allowed to be used at this point ({context}; "
                       f"allowed: {allowed})", where)
        value_key = next((k for k in ext if k.startswith("value")), None)
        if value_key is not None:
            vtype = value_key[5:]
            vtype = vtype if vtype[:1].isupper() and element_shape(vtype, "id") is not None else \
                vtype[:1].lower() + vtype[1:]
            if not rule["value"]:
                self.issue("structure", f"The extension {url} is complex: it takes sub-extensions, not a value",
                           f"{where}.{value_key}")
            elif vtype not in rule["value"] and "*" not in rule["value"]:
                self.issue("structure", f"The extension {url} takes a value of type "
                           f"{', '.join(rule['value'])}, not {vtype}", f"{where}.{value_key}")
        known = set(rule["extensions"])
        present = {s.get("url") for s in ext.get("extension") or () if isinstance(s, dict)}
        for missing in (u for u in rule.get("required", ()) if u not in present):
            self.issue("structure", f"The extension {url} needs its sub-extension {missing!r}", where)
        for i, sub in enumerate(ext.get("extension") or ()):
            sub_url = sub.get("url") if isinstance(sub, dict) else None
            if isinstance(sub_url, str) and "://" not in sub_url and known and sub_url not in known:
                self.issue("structure", f"The extension {url} has no sub-extension {sub_url!r} (it has: "
                           f"{', '.join(sorted(known))})", f"{where}.extension[{i}]")

    # -- narrative ---------------------------------------------------------------------------------------------
    def narrative(self, narrative: dict, where: str) -> None:
        div = narrative.get("div")
        if not isinstance(div, str):
            return
        try:
            root = etree.fromstring(_ENTITY.sub(_entity, div).encode("utf-8"), _xhtml_parser())
        except etree.XMLSyntaxError as error:
            self.issue("invariant", f"The narrative div is not well-formed XHTML: {error}", f"{where}.div")
            return
        if root.tag != f"{{{_XHTML}}}div":
            self.issue("invariant", "Constraint failed: txt-3: the narrative is a div in the XHTML namespace",
                       f"{where}.div")
        problem = _xhtml_problem(root)
        if problem:
            self.issue("invariant", f"Constraint failed: txt-1: The narrative SHALL contain only the basic html "
                       f"formatting elements and attributes described in chapters 7-11 (except section 4 of "
                       f"chapter 9) and 15 of the HTML 4.0 standard, <a> elements (either name or href), images "
                       f"and internally contained style attributes ({problem})", f"{where}.div")
        if not "".join(root.itertext()).strip() and root.find(f".//{{{_XHTML}}}img") is None:
            self.issue("invariant", "Constraint failed: txt-2: The narrative SHALL have some non-whitespace content",
                       f"{where}.div")

    # -- codings and vital signs (r4codes.py) -------------------------------------------------------------------
    def coding(self, coding: dict, where: str) -> None:
        self.out += r4codes.coding_issues(self.conf, coding, where)

    def vital_signs(self, obs: dict, where: str) -> None:
        self.out += r4codes.vital_sign_issues(obs, where)


def _entity(match: re.Match) -> str:
    """An HTML named entity (`&nbsp;`) as its character, as the validator's XHTML parser reads it."""
    name = match.group(1)
    return match.group(0) if name in _XML_ENTITIES or name not in name2codepoint else chr(name2codepoint[name])


def _in_context(contexts: list[dict], context: str, rtype: str) -> bool:
    """Whether an extension on an element of path `context` (no indexes; its type is looked up) is allowed."""
    if not contexts:
        return True
    holder_type = _type_at(context)
    parent, _, last = context.rpartition(".")
    typed = f"{_type_at(parent)}.{last}" if parent else context  # Patient.name.family -> HumanName.family
    for c in contexts:
        kind, expression = c.get("type"), c.get("expression")
        if kind != "element" or not isinstance(expression, str):
            return True  # fhirpath and extension contexts: not judged here
        if expression in _BASES or expression in (context, holder_type, typed):
            return True
        if expression in _RESOURCE_BASES and "." not in context:
            return True
        if expression == "BackboneElement" and holder_type is not None and "_" in holder_type:
            return True
        if expression.startswith(rtype + ".") and context.startswith(expression):
            return True
    return False


@cache
def _type_at(context: str) -> str | None:
    """The R4 type of the element at a path without indexes (`Patient.name` -> HumanName)."""
    steps = context.split(".")
    typ: str | None = steps[0]
    for step in steps[1:]:
        shape = element_shape(typ, step) if typ else None
        typ = shape[0] if shape else None
    return typ


@cache
def _xhtml_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _xhtml_problem(root: Any) -> str | None:
    allowed = _data("narrative-xhtml.json")
    elements, attributes = frozenset(allowed["elements"]), frozenset(allowed["attributes"])
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue
        namespace, _, local = node.tag[1:].partition("}") if node.tag.startswith("{") else ("", "", node.tag)
        if namespace != _XHTML or local not in elements:
            return f"element <{local}> is not allowed"
        for name, value in node.attrib.items():
            bare = name.rsplit("}", 1)[-1]
            if bare not in attributes and not name.startswith("{http://www.w3.org/XML/1998/namespace}"):
                return f"attribute {bare!r} on <{local}> is not allowed"
            if bare in ("href", "src") and value.strip().lower().startswith(("javascript:", "vbscript:")):
                return f"a script url in {bare!r}"
    return None
