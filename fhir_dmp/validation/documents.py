"""The DMP rules on documents that no StructureDefinition expresses, each in one place.

- A document's class (TRE_A03, `category`) is the class its type has in the ASS_X16 ConceptMap, and its type
  is one ASS_X16 maps at all (a type without a class could never be filed nor shown by the matrix).
- An attachment's `size` and SHA-1 `hash` are those of its bytes: inline `data`, or the Binary its `url` names
  (the caller resolves the url: `bytes_of` answers None when the bytes are kept elsewhere, and nothing is said,
  or raises `Unresolvable` when the url names a Binary of this server the caller cannot read).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

import pybase64

from fhir_dmp.errors import Issue
from fhir_dmp.terminology.classes import TRE_A03, codings, declared_classes
from fhir_dmp.terminology.store import Conformance

ASS_X16 = "https://mos.esante.gouv.fr/NOS/ASS_X16-CorrespondanceType-Classe-DMP/FHIR/ASS-X16-CorrespondanceType-Classe-DMP"

BytesOf = Callable[[str], "bytes | None"]


class Unresolvable(Exception):
    """The url names a Binary of this server that does not exist or that the caller may not read."""


_CLASSES: dict[int, tuple[Conformance, dict[tuple[str, str], str]]] = {}


def class_of_types(conf: Conformance) -> dict[tuple[str, str], str]:
    """(type system, type code) -> TRE_A03 class, from the shipped ASS_X16 (read once per store)."""
    held = _CLASSES.get(id(conf))
    if held is None or held[0] is not conf:
        held = _CLASSES[id(conf)] = (conf, _classes(conf))
    return held[1]


def _classes(conf: Conformance) -> dict[tuple[str, str], str]:
    cmap = conf.resolve("ConceptMap", ASS_X16) or {}
    out: dict[tuple[str, str], str] = {}
    for group in cmap.get("group") or ():
        if group.get("target") != TRE_A03:
            continue
        for element in group.get("element") or ():
            target = next((t.get("code") for t in element.get("target") or () if t.get("code")), None)
            if target and element.get("code"):
                out[(group.get("source", ""), element["code"])] = target
    return out


def class_issues(conf: Conformance, document: dict, rtype: str = "DocumentReference") -> list[Issue]:
    """Type/class consistency of a DocumentReference (ASS_X16)."""
    known = class_of_types(conf)
    # `$validate` brings resources of any JSON shape here (the structure's issues are reported beside these):
    # only string systems and codes are codes at all.
    typed = [(c.get("system"), c.get("code")) for c in codings(document.get("type"))
             if isinstance(c.get("code"), str) and isinstance(c.get("system"), str | None)]
    mapped = [(t, known[t]) for t in typed if t in known]
    if not typed:
        return []  # the profile says the type is missing
    if not mapped:
        shown = ", ".join(f"{s}|{c}" for s, c in typed)
        return [Issue("code-invalid", f"The document type {shown} is not a DMP document type: ASS_X16 gives it "
                      "no class", (f"{rtype}.type",))]
    declared = declared_classes(document)
    expected = {cls for _, cls in mapped}
    if declared and not declared & expected:
        (system, code), cls = mapped[0]
        return [Issue("business-rule", f"The class {', '.join(sorted(str(d) for d in declared))} does not match the "
                      f"type {code}: ASS_X16 puts it in class {cls}", (f"{rtype}.category",))]
    return []


def attachment_issues(document: dict, bytes_of: BytesOf, rtype: str = "DocumentReference") -> list[Issue]:
    """Each attachment's declared size and hash against its bytes, where they are at hand."""
    issues: list[Issue] = []
    for i, item in enumerate(_list(document.get("content"))):
        attachment = item.get("attachment") if isinstance(item, dict) else None
        if not isinstance(attachment, dict):
            continue
        where = f"{rtype}.content[{i}].attachment"
        data = attachment.get("data")
        if isinstance(data, str):
            raw = decoded(data)
            if raw is None:
                issues.append(Issue("invalid", "The attachment's data is not base64", (f"{where}.data",)))
                continue
        elif isinstance(attachment.get("url"), str):
            try:
                raw = bytes_of(attachment["url"])
            except Unresolvable as missing:
                issues.append(Issue("not-found", str(missing), (f"{where}.url",)))
                continue
            if raw is None:
                continue
        else:
            continue
        issues += _matching(attachment, raw, where)
    return issues


def digest(raw: bytes) -> str:
    """An attachment's `hash`: SHA-1, base64."""
    return base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii")  # noqa: S324 - the format MHD fixes


def decoded(data: str) -> bytes | None:
    """The bytes of base64 `data`, None when it is not base64. pybase64 (SIMD, ~40x faster: an ITI-65 decodes
    ~700 KB) answers what it accepts, and what it accepts the standard library decodes alike (checked on millions of
    strings, `tests/validation/test_base64.py`); the odd forms only the standard library takes (excess
    padding: `AAAA=`) go to it, so every verdict stays the standard library's."""
    try:
        return pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _matching(attachment: dict, raw: bytes, where: str) -> list[Issue]:
    issues = []
    size = attachment.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size != len(raw):
        issues.append(Issue("business-rule", f"The attachment's size is {size} but its document has {len(raw)} "
                            "bytes", (f"{where}.size",)))
    declared = attachment.get("hash")
    if isinstance(declared, str) and declared != digest(raw):
        issues.append(Issue("business-rule", f"The attachment's hash {declared} is not the SHA-1 of its document "
                            f"({digest(raw)})", (f"{where}.hash",)))
    return issues


def _list(value: object) -> list:
    return value if isinstance(value, list) else []
