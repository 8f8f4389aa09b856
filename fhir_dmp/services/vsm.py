"""The VSM, Volet de Synthèse Médicale (dmp-reference.md 8): its document Bundle, the DocumentReference saving it
files in the DMP, and the médecin traitant's worklist.

- `Composition/{id}/$document` (R4 OperationDefinition Composition-document) assembles the document Bundle: the
  Composition first, then each resource it references (subject, encounter, authors, attesters, custodian, section
  authors, focus and entries, nested sections too) that exists on this server, is of this DMP (or outside any) and
  that the caller may see. A hidden or missing one is left out, as `_include` leaves it out: refusing the whole
  document would tell that something hidden is there, and R4 lets a document name what its Bundle lacks.
- Saving a VSM (create or update, alone or in a transaction) files, in the same unit of work, a DocumentReference
  of type 60591-5 (dmp-documentreference) whose attachment is a Binary holding the document Bundle as saved (every
  referenced resource of the DMP, whatever the author may see), with its size and SHA-1. It replaces
  (`relatesTo` replaces, status `superseded`) every current 60591-5 DocumentReference of the DMP: the newest VSM
  saved is the current one. The Composition and its entries then follow that DocumentReference's access facts
  (`governed_by`, like a Binary), so masking it masks them too.
- `Patient/$vsm-status?older-than=6mo`: the médecin traitant's open DMPs whose VSM is missing or older.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError, Issue, bad_request, unprocessable
from fhir_dmp.policy import labels
from fhir_dmp.policy import vsm as vsm_policy
from fhir_dmp.policy.access import narrow
from fhir_dmp.policy.facts import SUMMARY_TYPES, VSM_TYPE, access_facts, governed
from fhir_dmp.policy.habilitation import LOINC
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.services import content, reads, references, validating
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import dmps, queries, resources
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.records import SYSTEM_SCOPE, NewResource, Stored
from fhir_dmp.terminology.classes import TRE_A03
from fhir_dmp.validation.documents import digest

DOCUMENT_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Composition-document"
STATUS_DEFINITION = "https://fhir-dmp.example.org/OperationDefinition/Patient-vsm-status"
DOCREF_PROFILE = "https://fhir-dmp.example.org/StructureDefinition/dmp-documentreference"
TRE_A08 = "https://mos.esante.gouv.fr/NOS/TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality"
STRUCTURE_ID = "urn:oid:1.2.250.1.71.4.2.2"  # idNatStruct, for a custodian taken from the token
# Document identifiers are name-based UUIDs of `Composition/<id>/_history/<version>`: one per version, stable.
DOCUMENT_NAMESPACE = uuid.UUID("6b1f2c0e-3c55-4c8e-9a57-0d3f5e2a9b61")
_DURATION = re.compile(r"^(\d{1,4})(d|wk|mo|a)$")
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def is_vsm(composition: dict) -> bool:
    concept = composition.get("type")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return isinstance(codings, list) and any(
        isinstance(x, dict) and x.get("system") == LOINC and x.get("code") == VSM_TYPE for x in codings)


def document_identifier(stored: Stored) -> dict:
    """The document Bundle's identifier, and its DocumentReference's masterIdentifier: one per Composition version."""
    name = f"Composition/{stored.id}/_history/{stored.version_id}"
    return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid5(DOCUMENT_NAMESPACE, name)}"}


# -- the document Bundle ---------------------------------------------------------------------------------------
def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _section_references(sections: Any) -> Iterator[str]:
    for section in sections if isinstance(sections, list) else []:
        if isinstance(section, dict):
            for key in ("author", "focus", "entry"):
                yield from _references(section.get(key))
            yield from _section_references(section.get("section"))


def referenced(composition: dict, base_url: str) -> list[tuple[str, str]]:
    """(type, id) of every resource of this server a Composition references, in document order, once each;
    contained (`#id`), conditional and external references name nothing stored here."""
    refs = [*_references(composition.get("subject")), *_references(composition.get("encounter")),
            *_references(composition.get("author")),
            *(r for a in _list(composition.get("attester")) for r in _references(a.get("party"))),
            *_references(composition.get("custodian")),
            *(r for e in _list(composition.get("event")) for r in _references(e.get("detail"))),
            *_section_references(composition.get("section"))]
    out: list[tuple[str, str]] = []
    for ref in refs:
        rtype = ref.removeprefix(base_url.rstrip("/") + "/").split("/", 1)[0]
        definition = RESOURCES.get(rtype)
        rid = references.local_id(ref, rtype, base_url) if definition and not definition.shipped else None
        if rid is not None and (rtype, rid) not in out:
            out.append((rtype, rid))
    return out


def _list(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def assemble(u: Unit, stored: Stored, scope: c.Criterion) -> tuple[dict, list[Stored]]:
    """The document Bundle of a Composition version (R4 documents: type document, identifier, timestamp, the
    Composition first, fullUrls) with the referenced resources within `scope` (in the SQL), and those resources."""
    composition = content.resource_of(stored)
    base_url = u.req.base_url
    found: list[Stored] = []
    for rtype, rid in referenced(composition, base_url):
        within = narrow(scope, rtype)
        row = resources.read_current(u.tx, rtype, rid, scope=None if within == SYSTEM_SCOPE else within)
        if (row is None or row.deleted or row.patient_key not in ("", stored.patient_key)
                or (rtype, rid) == ("Composition", stored.id)):
            continue
        found.append(row)
    entries = [{"fullUrl": f"{base_url}/Composition/{stored.id}", "resource": composition}]
    entries += [{"fullUrl": f"{base_url}/{r.resource_type}/{r.id}", "resource": content.resource_of(r)} for r in found]
    bundle = {"resourceType": "Bundle", "identifier": document_identifier(stored), "type": "document",
              "timestamp": instant(stored.last_updated), "entry": entries}
    return bundle, found


def document(u: Unit, req: FhirRequest) -> FhirResponse:
    if req.method not in ("GET", "POST"):
        raise method_not_allowed(req, ("GET", "HEAD", "POST"), f"$document takes GET or POST, not {req.method}")
    if not req.id:
        raise bad_request("$document runs on one Composition: Composition/{id}/$document")
    _document_arguments(req)
    stored = reads.current(u, req)  # 404 when absent or hidden, 403 for a DMP closed to the caller
    if stored.deleted:
        raise FhirError.of(410, "deleted", f"Composition/{req.id} was deleted")
    bundle, found = assemble(u, stored, u.scope(u.access(stored.patient_key)))
    for row in found:
        u.touch(row.patient_key or stored.patient_key, f"{row.resource_type}/{row.id}/_history/{row.version_id}",
                facts=row.facts)
    return FhirResponse(200, bundle, content.version_headers(stored, req.base_url))


def _document_arguments(req: FhirRequest) -> None:
    """`persist` true (store the Bundle) is not supported, nor `graph`; anything else is ignored (400 under
    `Prefer: handling=strict`)."""
    given: list[tuple[str, Any]] = [(k, v) for k, v in req.query if k not in ("_format", "_pretty")]
    if req.method == "POST" and req.body not in (None, b"", {}):
        body = req.body
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise bad_request("POST $document takes a Parameters resource (or no body)", code="structure")
        for i, p in enumerate(body.get("parameter") if isinstance(body.get("parameter"), list) else []):
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise bad_request(f"Parameters.parameter[{i}] needs a name", f"Parameters.parameter[{i}]",
                                  code="structure")
            given.append((p["name"], next((v for k, v in p.items() if k.startswith("value")), None)))
    for name, value in given:
        if name == "persist":
            if value in (True, "true"):
                raise FhirError.of(400, "not-supported", "$document: persist=true is not supported: the document "
                                   "Bundle is not stored; saving the VSM already files it as a DocumentReference")
            if value not in (False, "false"):
                raise bad_request(f"$document: persist must be true or false, not {value!r}", "persist")
        elif name == "graph":
            raise FhirError.of(400, "not-supported", "$document: graph is not supported")
        elif req.strict:
            raise bad_request(f"$document has no parameter '{name}'", name, code="not-supported")


# -- filing the VSM's DocumentReference ----------------------------------------------------------------------
def file_saved(u: Unit) -> None:
    """Each VSM created or updated in this unit of work files its DocumentReference (called before the unit of
    work commits, so the VSM and its DocumentReference are written together or not at all)."""
    done: set[str] = set()
    for rtype, rid in list(u.saved):
        if rtype != "Composition" or rid in done:
            continue
        done.add(rid)
        stored = resources.read_current(u.tx, "Composition", rid)
        if stored is None or stored.deleted or not stored.patient_key:
            continue
        composition = content.resource_of(stored)
        if is_vsm(composition):
            _file(u, stored, composition)


def _file(u: Unit, stored: Stored, composition: dict) -> None:
    key, base_url = stored.patient_key, u.req.base_url
    u.lock(f"vsm/{key}")  # one current VSM per DMP, even when two are saved at once
    current = queries.find(u.tx, "DocumentReference", c.AllOf((
        c.PatientIs(key), c.DocTypeIn((VSM_TYPE,)), c.Token("status", None, "current"))),
        limit=1000, scope=SYSTEM_SCOPE)
    for rtype, rid in referenced(composition, base_url):  # a VSM sums up one DMP: never another's resources
        row = resources.read_current(u.tx, rtype, rid)
        if row is not None and row.patient_key not in ("", key):
            raise unprocessable(f"The VSM references {rtype}/{rid}, which belongs to another DMP", "Composition")
    bundle, found = assemble(u, stored, SYSTEM_SCOPE)  # the VSM as saved: every referenced resource of the DMP
    raw = fhirjson.dumps(bundle).encode()
    entries = [row for row in found if row.resource_type in SUMMARY_TYPES and row.patient_key == key]
    carried = _carried_labels(current, stored.id, base_url)
    doc_id, binary_id, when = str(uuid.uuid4()), str(uuid.uuid4()), now_utc()
    docref = _document_reference(u, stored, composition, entries, current, carried, doc_id, binary_id, raw)
    if u.rt.settings.enforce_profiles:
        issues = validating.conformity_issues(u.rt.conformance, docref,
                                              lambda url: raw if url == f"Binary/{binary_id}" else None)
        if issues:  # a VSM that conforms but cannot be filed as a DMP document: say what it lacks
            raise FhirError(422, [Issue(i.code, f"The VSM's DocumentReference, filed from this Composition, "
                                                f"would not conform: {i.diagnostics}", (), i.severity)
                                  for i in issues])
    types = u.rt.matrix.codes.types
    docref = content.stamp(docref, doc_id, 1, when)
    binary = content.stamp({"resourceType": "Binary", "contentType": "application/fhir+json",
                            "securityContext": {"reference": f"DocumentReference/{doc_id}"},
                            "data": base64.b64encode(raw).decode("ascii")}, binary_id, 1, when)
    owner = stored.facts.owner  # the VSM's depositor deposited its DocumentReference
    facts = access_facts("DocumentReference", docref, owner, when, types)
    resources.insert_resources(u.tx, [
        NewResource("DocumentReference", doc_id, key, fhirjson.dumps(docref), when,
                    index_rows("DocumentReference", docref, base_url), facts=facts),
        NewResource("Binary", binary_id, key, fhirjson.dumps(binary), when, index_rows("Binary", binary, base_url),
                         facts=access_facts("Binary", binary, owner, when, types, facts))])
    u.touch(key, f"DocumentReference/{doc_id}/_history/1")
    u.touch(key, f"Binary/{binary_id}/_history/1")
    for old in current:
        _supersede(u, old, types)
    dmps.govern(u.tx, [("Composition", stored.id), *((r.resource_type, r.id) for r in entries)],
                f"DocumentReference/{doc_id}", facts)


def _document_reference(u: Unit, stored: Stored, composition: dict, entries: list[Stored], current: list[Stored],
                        carried: list[dict], doc_id: str, binary_id: str, raw: bytes) -> dict:
    """The DocumentReference (dmp-documentreference) of a VSM version."""
    title = composition.get("title") if isinstance(composition.get("title"), str) else "Volet de synthèse médicale"
    confidentiality = composition.get("confidentiality") if composition.get("confidentiality") in (
        "N", "R", "V") else "N"
    visibility = [x for x in labels.codings("Composition", composition) if x.get("code") in labels.BITS]
    for row in entries:
        visibility += [x for x in labels.codings(row.resource_type, content.resource_of(row))
                       if x.get("code") in labels.BITS]
    visibility += carried
    unique: dict[str, dict] = {}
    for coding in visibility:
        unique.setdefault(coding["code"], {"system": labels.TRE_A07, "code": coding["code"]})
    docref: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [DOCREF_PROFILE]},
        "masterIdentifier": document_identifier(stored),
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{doc_id}"}],
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": VSM_TYPE, "display": "Synthèse médicale"}]},
        "category": [{"coding": [{"system": TRE_A03, "code": "11", "display": "Synthèse"}]}],
        "subject": {"reference": f"Patient/{stored.patient_key}"},
        "date": _instant_or(composition.get("date"), stored),
        "author": composition.get("author"),
        "custodian": composition.get("custodian") or _custodian(u),
        "description": title,
        "securityLabel": [{"coding": [{"system": TRE_A08, "code": confidentiality}]},
                          *({"coding": [x]} for x in sorted(unique.values(), key=lambda x: x["code"]))],
        "content": [{"attachment": {"contentType": "application/fhir+json", "url": f"Binary/{binary_id}",
                                    "size": len(raw), "hash": digest(raw), "title": title}}],
        "context": {"period": {"start": _start(composition)},
                    "related": [{"reference": f"Composition/{stored.id}"}]},
    }
    if current:
        docref["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{old.id}"}}
                               for old in current]
    return {k: v for k, v in docref.items() if v is not None}


def _instant_or(value: Any, stored: Stored) -> str:
    """DocumentReference.date is an instant: the Composition's date when it is one, else when it was saved."""
    if isinstance(value, str) and _INSTANT.match(value):
        return value
    return instant(stored.last_updated)


def _custodian(u: Unit) -> dict | None:
    """A VSM naming no custodian: the caller's structure (the token's `organization`), if any."""
    org = u.caller.organization
    return {"type": "Organization", "identifier": {"system": STRUCTURE_ID, "value": org}} if org else None


def _start(composition: dict) -> Any:
    """When the care the VSM sums up started: its first event's period, else its date."""
    for event in _list(composition.get("event")):
        period = event.get("period")
        if isinstance(period, dict) and period.get("start"):
            return period["start"]
    return composition.get("date")


def _carried_labels(current: list[Stored], composition_id: str, base_url: str) -> list[dict]:
    """The visibility labels of the DocumentReferences a new version of the same VSM replaces: a patient who masked
    their VSM keeps it masked when the médecin updates it."""
    out: list[dict] = []
    for row in current:
        doc = content.resource_of(row)
        related = [r for r in _references(doc.get("context", {}).get("related") if isinstance(
            doc.get("context"), dict) else None)]
        if any(references.local_id(r, "Composition", base_url) == composition_id for r in related):
            out += [x for x in labels.codings("DocumentReference", doc) if x.get("code") in labels.BITS]
    return out


def _supersede(u: Unit, old: Stored, types: Any) -> None:
    body = {**content.resource_of(old), "status": "superseded"}
    when = now_utc()
    stamped = content.stamp(body, old.id, old.version_id + 1, when)
    facts = access_facts("DocumentReference", stamped, old.facts.owner, when, types)
    index = index_rows("DocumentReference", stamped, u.req.base_url)
    resources.write_version(u.tx, old, content=fhirjson.dumps(stamped), patient_key=old.patient_key,
                            last_updated=when, method="PUT", index=index, facts=facts)
    u.touch(old.patient_key, f"DocumentReference/{old.id}/_history/{old.version_id + 1}", facts=old.facts)


def still_governed(u: Unit, facts: AccessFacts, governed_by: str) -> AccessFacts:
    """A new version of a governed VSM part keeps following its DocumentReference (when it still exists)."""
    doc = resources.read_current(u.tx, "DocumentReference", governed_by.split("/", 1)[1])
    return facts if doc is None else governed(facts, doc.facts, governed_by)


# -- the médecin traitant's worklist ---------------------------------------------------------------------------
def vsm_status(u: Unit, req: FhirRequest) -> FhirResponse:
    """Parameters: one `patient` per DMP (the Patient, `lastVsmDate` and `lastVsm` when it has a VSM), in DMP
    creation order; none when the caller is nobody's médecin traitant."""
    if req.method != "GET":
        raise method_not_allowed(req, ("GET", "HEAD"), f"Patient/$vsm-status takes GET, not {req.method}")
    if req.id:
        raise bad_request("$vsm-status runs on the Patient type: Patient/$vsm-status?older-than=6mo")
    refusal = vsm_policy.status_refusal(u.caller)
    if refusal is not None:
        raise refusal
    values = [v for k, v in req.query if k == "older-than"]
    if len(values) != 1:
        raise bad_request("$vsm-status needs one older-than: a number and a unit, d, wk, mo or a (e.g. 6mo)",
                          "older-than")
    cutoff = _before(u.now, values[0])
    for name, _ in req.query:
        if req.strict and name not in ("older-than", "_format", "_pretty"):
            raise bad_request(f"$vsm-status has no parameter '{name}'", name, code="not-supported")
    u.touch("", query=f"older-than={values[0]}")
    parameters: list[dict] = [{"name": "olderThan", "valueString": values[0]},
                              {"name": "cutoff", "valueDateTime": instant(cutoff)}]
    for patient, newest, newest_id in dmps.stale_documents(u.tx, u.caller.sub, VSM_TYPE, cutoff):
        u.touch(patient.id, f"Patient/{patient.id}/_history/{patient.version_id}")
        part: list[dict] = [{"name": "patient", "resource": content.resource_of(patient)}]
        if newest is not None:
            part += [{"name": "lastVsmDate", "valueDateTime": instant(newest)},
                     {"name": "lastVsm", "valueReference": {"reference": f"DocumentReference/{newest_id}"}}]
        parameters.append({"name": "patient", "part": part})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": parameters})


def _before(now: datetime, duration: str) -> datetime:
    """`now` minus a duration `<n><unit>` (d days, wk weeks, mo calendar months, a years); 400 otherwise."""
    match = _DURATION.match(duration.strip())
    if match is None:
        raise bad_request(f"older-than {duration!r} is not a duration: a number and a unit, d, wk, mo or a "
                          "(e.g. 6mo, 90d, 1a)", "older-than")
    n, unit = int(match.group(1)), match.group(2)
    if unit in ("d", "wk"):
        return now - timedelta(days=n * (7 if unit == "wk" else 1))
    months = n * (12 if unit == "a" else 1)
    year, month = divmod(now.year * 12 + now.month - 1 - months, 12)
    if year < 1:
        raise bad_request(f"older-than {duration!r} reaches before year 1", "older-than")
    days = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30,
            31, 30, 31][month]
    return now.replace(year=year, month=month + 1, day=min(now.day, days))
