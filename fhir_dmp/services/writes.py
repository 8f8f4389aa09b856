"""The write pipeline: parse -> conform -> decide -> index -> store (the trace follows at the end of the unit).

Every write goes through these stages: a REST create, update, patch or delete, each entry of a transaction and
of an ITI-65, the VSM's filing, `$close`/`$reopen`. A caller composes the stages it needs (a transaction checks
every entry's conformity at once before it stores any; an operation decides with its own rule), so no stage
takes a flag saying which of its parts to skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError, precondition_failed
from fhir_dmp.policy import lists
from fhir_dmp.policy import writes as rules
from fhir_dmp.policy.access import feeding_refusal
from fhir_dmp.policy.facts import access_facts, governing_reference
from fhir_dmp.search.dates import now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.services import content, ins, mhd, references, validating, vsm
from fhir_dmp.services.reads import list_as_shown, visible
from fhir_dmp.services.registry import RESOURCES, SERVED_APART
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import resources
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.records import NewResource, Stored
from fhir_dmp.validation import documents

BytesOf = Callable[[str], bytes | None]


# -- parse ------------------------------------------------------------------------------------------------------
def parsed(u: Unit, body: object, resource_type: str) -> dict:
    """The request body as a resource of the URL's type (400 when it is none), structurally valid (`checked`)."""
    resource = content.as_resource(body, resource_type)
    checked(u, resource)
    return resource


def checked(u: Unit, resource: dict) -> None:
    """A resource R4 refuses is one 422 listing its structure issues and, in the same answer, its profiles' and
    the DMP rules' errors: a vendor fixes everything in one round, not the structure first and the profile next.
    A structurally valid resource passes here and is conformed after the decision (`conform`); one judged before
    the unit of work (`Unit.was_judged`) is not judged again."""
    if u.was_judged(resource):
        return
    issues = validating.r4_issues(u.rt.conformance, resource)
    if not issues:
        return
    if u.rt.settings.enforce_profiles:
        seen = {(i.code, i.expression) for i in issues}
        issues += [i for i in validating.conformity_issues(u.rt.conformance, resource, bytes_of(u))
                   if (i.code, i.expression) not in seen]
    raise FhirError(422, issues)


# -- conform ----------------------------------------------------------------------------------------------------
def conform(u: Unit, body: dict) -> None:
    """A write of a profiled type conforms (422 listing every error), unless the settings turn profiles off or it
    was judged before the unit of work (a transaction's entry, as sent: `Unit.was_judged`)."""
    if u.rt.settings.enforce_profiles and not u.was_judged(body):
        validating.enforce(u.rt.conformance, body, bytes_of(u))


def bytes_of(u: Unit, bundled: BytesOf | None = None) -> BytesOf:
    """Resolves an attachment url to the document's bytes: a Binary of this server the caller sees (or of the
    transaction under way, `bundled`); None when it is kept elsewhere. A Binary of this server that is missing or
    hidden is one answer (`Unresolvable`): a refusal never tells the size or hash of a document the caller may
    not read."""
    def resolve(url: str) -> bytes | None:
        found = bundled(url) if bundled is not None else None
        if found is not None:
            return found
        rid = references.local_id(url, "Binary", u.req.base_url)
        if rid is None:
            return None
        unresolvable = documents.Unresolvable(f"{url} names no Binary of this server that you may read")
        try:
            stored = visible(u, "Binary", rid)  # the caller's scope in the read's SQL
        except FhirError:  # in a DMP closed to the caller: as absent
            raise unresolvable from None
        if stored is None or stored.deleted or stored.content is None:
            raise unresolvable
        data = fhirjson.loads(stored.content).get("data")
        return documents.decoded(data) if isinstance(data, str) else b""
    return resolve


# -- create ---------------------------------------------------------------------------------------------------
def prepare_new(u: Unit, req: FhirRequest, body: dict, rid: str,
                pending: dict[tuple[str, str], str]) -> tuple[NewResource, FhirResponse]:
    """Decide and index a create (everything but the INSERT, so a transaction writes its creates at once).
    `pending` maps (type, id) of resources created earlier in the unit to their patient key."""
    assert req.resource_type
    if RESOURCES[req.resource_type].shipped or req.resource_type in SERVED_APART:  # without the route table
        raise method_not_allowed(req)
    rtype, caller = req.resource_type, u.caller
    when = now_utc()
    stamped = content.stamp(rules.as_deposited(caller, rtype, body), rid, 1, when)
    patient = references.patient_key(u, rtype, stamped, rid, pending)
    u.touch(patient, f"{rtype}/{rid}/_history/1")
    # None also for a DMP created earlier in this transaction: new, open, with no choices recorded yet
    dmp = u.dmp(patient) if patient and rtype != "Patient" else None
    refusal = rules.create_refusal(caller, rtype, stamped, dmp)
    if refusal is None and dmp is not None:
        refusal = feeding_refusal(caller, dmp)
    if refusal is not None:
        raise refusal
    if rtype == "Patient":  # one DMP per INS, race-safe (409 for a second one)
        ins.claim_ins(u, stamped, rid)
    # MHD replacement: the documents it replaces become superseded (a DMP rule: off, like the profiles, for the
    # generic FHIR data FHIR_DMP_ENFORCE_PROFILES=false admits)
    if rtype == "DocumentReference" and u.rt.settings.enforce_profiles:
        for target, before in mhd.replaced(u, stamped, patient):
            superseded = {**before, "status": "superseded"}
            decide_change(u, target, superseded)  # the caller's rights to change it (policy/documents.py)
            store_version(u, FhirRequest("PATCH", "DocumentReference", target.id, base_url=req.base_url), target,
                          superseded, "PATCH")
    facts = access_facts(rtype, stamped, u.owner, when, u.rt.matrix.codes.types,
                         _governing(u, stamped) if rtype == "Binary" else None)
    u.touch(patient, f"{rtype}/{rid}/_history/1", facts=facts)
    if rtype == "DocumentReference":
        u.pending_facts[f"DocumentReference/{rid}"] = facts
    u.saved.append((rtype, rid))
    if rules.authorised_by_creating(caller, rtype):
        u.authorise_on.append(rid)
    if rtype in ("Patient", "Consent"):
        u.forget(patient)
    new = NewResource(rtype, rid, patient, fhirjson.dumps(stamped), when, index_rows(rtype, stamped, req.base_url),
                      "PUT" if req.method == "PUT" else "POST", facts)
    stored = Stored(rtype, rid, 1, when, False, patient, new.content, "POST")
    return new, FhirResponse(201, stamped, content.version_headers(stored, req.base_url, location=True),
                             resource_created=True)


def insert(u: Unit, news: list[NewResource]) -> None:
    """Store prepared creates (one statement on PostgreSQL, whatever their number)."""
    resources.insert_resources(u.tx, news)


def store_new(u: Unit, req: FhirRequest, body: dict, rid: str | None = None) -> FhirResponse:
    new, response = prepare_new(u, req, body, rid or str(uuid.uuid4()), {})
    insert(u, [new])
    return response


def _governing(u: Unit, binary: dict) -> AccessFacts | None:
    """The facts of the DocumentReference a Binary's securityContext names, if it exists yet."""
    ref = governing_reference(binary)
    if not ref:
        return None
    if ref in u.pending_facts:
        return u.pending_facts[ref]
    stored = resources.read_current(u.tx, "DocumentReference", ref.split("/", 1)[1])
    return stored.facts if stored is not None else None


# -- change ---------------------------------------------------------------------------------------------------
def lock_for_write(u: Unit, req: FhirRequest) -> None:
    """Queue writers of one resource before its current version is read, so that concurrent updates apply one
    after the other instead of failing on the version key (PostgreSQL)."""
    u.lock(f"{req.resource_type}/{req.id}")


def check_if_match(req: FhirRequest, stored: Stored) -> None:
    if req.if_match and req.if_match.strip() != "*" and content.parse_etag(req.if_match) != stored.version_id:
        raise precondition_failed(f"If-Match {req.if_match} does not match the current version "
                                  f'W/"{stored.version_id}" of {stored.resource_type}/{stored.id}')


def decide_change(u: Unit, stored: Stored, after: dict | None) -> None:
    """The caller sees `stored` (checked before); may their role change (`after`) or delete (None) it?"""
    access = u.access(stored.patient_key)
    before = content.resource_of(stored) if stored.content else {}
    refusal = rules.change_refusal(u.caller, access, stored.resource_type, stored.facts.owner, before, after,
                                   u.dmp(stored.patient_key) if stored.patient_key else None)
    if refusal is not None:
        raise refusal


def store_version(u: Unit, req: FhirRequest, stored: Stored, body: dict, method: str) -> FhirResponse:
    """Index and store `body` as the next version of `stored` (decided and conformed before)."""
    assert req.resource_type
    rtype = req.resource_type
    if rtype == "Patient":
        ins.claim_ins(u, body, stored.id, content.resource_of(stored))
    when = now_utc()
    stamped = content.stamp(body, stored.id, stored.version_id + 1, when)
    patient = references.patient_key(u, rtype, stamped, stored.id, {})
    if patient != stored.patient_key and patient:  # moved to another DMP: that is feeding it
        dmp = u.dmp(patient)
        refusal = feeding_refusal(u.caller, dmp) if dmp is not None and rtype != "Patient" else None
        if refusal is not None:
            raise refusal
    u.touch(patient, f"{rtype}/{stored.id}/_history/{stored.version_id + 1}")
    facts = access_facts(rtype, stamped, stored.facts.owner, when, u.rt.matrix.codes.types,
                         _governing(u, stamped) if rtype == "Binary" else None)
    if rtype != "Binary" and stored.facts.governed_by:  # a VSM part keeps following its DocumentReference
        facts = vsm.still_governed(u, facts, stored.facts.governed_by)
    for named in (stored.facts, facts):  # the trace names the version it replaces and the new one
        u.touch(patient, f"{rtype}/{stored.id}/_history/{stored.version_id + 1}", facts=named)
    u.saved.append((rtype, stored.id))
    new = resources.write_version(u.tx, stored, content=fhirjson.dumps(stamped), patient_key=patient,
                                  last_updated=when, method=method, index=index_rows(rtype, stamped, req.base_url),
                                  facts=facts)
    if rtype in ("Patient", "Consent"):
        u.forget(patient)
        u.forget(stored.patient_key)
    return FhirResponse(200, stamped, content.version_headers(new, req.base_url, location=True))


def change(u: Unit, req: FhirRequest, stored: Stored, body: dict, method: str) -> FhirResponse:
    """An update or patch of a resource the caller sees: If-Match, decide, conform, store."""
    check_if_match(req, stored)
    body = rules.as_deposited(u.caller, stored.resource_type, body)
    shaped = lists.shaped(u.caller, stored.resource_type) and stored.content is not None
    if shaped:  # the entries of a List the caller was not shown stay (policy/lists.py)
        left_out = list_as_shown(u, stored.patient_key, content.resource_of(stored))[1]
        body = lists.with_left_out(body, left_out, req.base_url)
    decide_change(u, stored, body)
    conform(u, body)
    response = store_version(u, req, stored, body, method)
    if shaped and isinstance(response.body, dict):
        response = replace(response, body=list_as_shown(u, stored.patient_key, response.body)[0])
    return response


def remove(u: Unit, req: FhirRequest, stored: Stored | None) -> FhirResponse:
    """A delete (logical: the history stays) of a resource the caller sees; None or a deleted one: 204."""
    if stored is None or stored.deleted:
        return FhirResponse(204)
    check_if_match(req, stored)
    decide_change(u, stored, None)
    u.touch(stored.patient_key, f"{stored.resource_type}/{stored.id}/_history/{stored.version_id + 1}",
            facts=stored.facts)
    new = resources.write_version(u.tx, stored, content=None, patient_key=stored.patient_key, last_updated=now_utc(),
                                  method="DELETE")
    if stored.resource_type in ("Patient", "Consent"):
        u.forget(stored.patient_key)
    return FhirResponse(204, None, {"ETag": f'W/"{new.version_id}"'})


def gone(stored: Stored) -> FhirError:
    return FhirError.of(410, "deleted", f"{stored.resource_type}/{stored.id} was deleted")
