"""The FHIR RESTful interactions over the store: one unit of work per request.

HTTP calls `FhirService.handle`; transaction Bundles call `dispatch` for each entry inside a single
unit of work, so a REST call and a Bundle entry run exactly the same code.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

import jsonpatch
import jsonpointer
from sqlalchemy import Connection

from fhir_dmp import fhirjson
from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError, bad_request, conflict, not_found, precondition_failed, unprocessable
from fhir_dmp.policy import actors, consents, emergency, labels, writes
from fhir_dmp.policy.access import IDENTITY_ELEMENTS, feeding_refusal
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.facts import DOCUMENT_TYPES, access_facts, governing_reference
from fhir_dmp.policy.habilitation import load_matrix
from fhir_dmp.search import shape
from fhir_dmp.search.dates import now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.search.parse import parse_criteria
from fhir_dmp.services import audit, conformance, content, history, lifecycle, mhd, notify, references, validating, vsm
from fhir_dmp.services.bundles import process_bundle
from fhir_dmp.services.dmp_operations import OPERATIONS
from fhir_dmp.services.guard import Guard
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed, parse_url
from fhir_dmp.services.searching import search
from fhir_dmp.storage import repository as repo
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.db import Database, TransientConflict
from fhir_dmp.storage.repository import StaleVersion, Stored
from fhir_dmp.terminology.store import load as load_conformance
from fhir_dmp.validation import documents

JSON_PATCH = "application/json-patch+json"
_RETRIES = 5
log = logging.getLogger(__name__)


class FhirService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.actor_rules = actors.load_actor_rules(settings.home / "terminologies" / "refused-actors.json")
        assert settings.habilitation_matrix is not None
        self.matrix = load_matrix(settings.habilitation_matrix, settings.home / "terminologies")
        self.conformance = load_conformance(settings.home)  # CodeSystem, ValueSet, ...: files, not the store

    # -- entry points -------------------------------------------------------------------------
    def admit(self, caller: Caller) -> None:
        refusal = actors.refusal(caller, self.actor_rules)
        if refusal is not None:
            raise refusal
        refusal = emergency.purpose_refusal(caller)
        if refusal is not None:
            raise refusal

    def admit_traced(self, caller: Caller, method: str, url: str, base_url: str) -> None:
        """`admit`, tracing a refusal (HTTP admits a caller before reading the body)."""
        try:
            self.admit(caller)
        except FhirError as error:
            try:
                req = parse_url(method, url, base_url=base_url)
            except FhirError:
                req = FhirRequest(method, base_url=base_url)
            self.trace_refusal(self.guard(caller), req, error)
            raise

    def guard(self, caller: Caller) -> Guard:
        return Guard(caller, self.matrix)

    def handle(self, caller: Caller, req: FhirRequest) -> FhirResponse:
        guard = self.guard(caller)
        try:
            self.admit(caller)
        except FhirError as error:
            self.trace_refusal(guard, req, error)
            raise
        if req.interaction == "batch/transaction":
            return process_bundle(self, guard, req)
        return self.run(guard, req)

    def run(self, guard: Guard, req: FhirRequest) -> FhirResponse:
        """One request in its own unit of work."""
        write = req.method in ("POST", "PUT", "PATCH", "DELETE") and req.operation not in ("_search", "$validate") \
            and not _shipped(req)
        return self.unit(guard, req, lambda conn: self.dispatch(conn, guard, req), write=write)

    def unit(self, guard: Guard, req: FhirRequest, work: Callable[[Connection], FhirResponse], *,
             write: bool) -> FhirResponse:
        """Run `work` in a unit of work, retried when a concurrent writer got there first, and trace it:
        a write's AuditEvent in its own transaction, a read's just after, a refusal's after the rollback."""
        try:
            for _ in range(_RETRIES):
                guard.reset()
                try:
                    with self.db.transaction(write=write) as conn:
                        response = work(conn)
                        if write:  # 8: a VSM saved files its DocumentReference in the same unit of work
                            vsm.file_saved(self, conn, guard, req.base_url)
                        sent = self.trace(conn, guard, req, response.status) if write else []
                    if not write:
                        with self.db.transaction(write=True) as conn:
                            sent = self.trace(conn, guard, req, response.status)
                    notify.post(self.settings.notify_url, sent)
                    return response
                except StaleVersion:
                    if req.if_match:
                        raise precondition_failed("The resource was changed by another client (If-Match)") from None
                except TransientConflict:
                    continue
            raise conflict("The resource is being changed by other clients; try again")
        except FhirError as error:
            self.trace_refusal(guard, req, error)
            raise
        except Exception:  # a fault of ours: traced too (outcome 8), then answered 500 by the HTTP layer
            self.trace_refusal(guard, req, FhirError.of(500, "exception", "Internal error"))
            raise

    def trace(self, conn: Connection, guard: Guard, req: FhirRequest, status: int) -> list[dict]:
        """What a successful interaction leaves: the authorisation of a professional who opened a DMP, the
        notifications it calls for, its AuditEvents. Returns the notifications, for the webhook."""
        for key in guard.authorise_on:
            self._record_authorisation(conn, guard, key, req.base_url)
        sent = notify.notifications(conn, guard, req.base_url)
        audit.record(conn, guard, req, status, None, req.base_url)
        return sent

    def trace_refusal(self, guard: Guard, req: FhirRequest, error: FhirError) -> None:
        try:
            with self.db.transaction(write=True) as conn:
                audit.record(conn, guard, req, error.status, error, req.base_url)
        except Exception:  # the refusal itself must reach the client even if its trace cannot be written
            log.exception("could not trace a refused %s", req.interaction)

    def _record_authorisation(self, conn: Connection, guard: Guard, key: str, base_url: str) -> None:
        """6.3: the professional who creates a DMP (with the patient's agreement) is thereby authorised."""
        body = {**consents.authorisation(key, guard.caller.sub), "dateTime": content.instant(guard.now)}
        rid, when = str(uuid.uuid4()), now_utc()
        stamped = content.stamp(body, rid, 1, when)
        repo.insert_resources(conn, [repo.NewResource(
            "Consent", rid, key, fhirjson.dumps(stamped), when, index_rows("Consent", stamped, base_url),
            facts=access_facts("Consent", stamped, guard.owner, when, self.matrix.codes.types))])
        guard.touch(key, f"Consent/{rid}/_history/1")

    def dispatch(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        interaction = req.interaction
        definition = RESOURCES.get(req.resource_type or "")
        if interaction == "history-system":
            return self.history(conn, guard, req)
        if definition is not None and definition.shipped:
            return conformance.handle(self.conformance, guard, req, self.settings)
        if definition is not None and interaction == "operation" and req.operation == "$validate":
            return validating.validate(self, conn, guard, req)
        operation = OPERATIONS.get((req.resource_type or "", req.operation or ""))
        if operation is not None and interaction == "operation":
            return operation(self, conn, guard, req)
        if definition is None or not definition.allows(interaction):
            raise method_not_allowed(req)
        handler = {
            "read": self.read, "vread": self.vread, "create": self.create, "update": self.update,
            "patch": self.patch, "delete": self.delete, "search-type": self.search,
            "history-instance": self.history, "history-type": self.history,
        }[interaction]
        return handler(conn, guard, req)

    # -- read ---------------------------------------------------------------------------------
    def current(self, conn: Connection, guard: Guard, req: FhirRequest) -> Stored:
        """The current row of the URL's resource as the caller may see it: 404 when absent or hidden from
        them (6.8), 403 when its whole DMP is closed to them."""
        assert req.resource_type and req.id
        stored = repo.read_current(conn, req.resource_type, req.id)
        if stored is None:
            raise not_found(f"{req.resource_type}/{req.id} does not exist")
        guard.touch(stored.patient_key, f"{req.resource_type}/{req.id}")
        if not self.sees(conn, guard, stored, refuse=True):
            raise not_found(f"{req.resource_type}/{req.id} does not exist")
        return stored

    def sees(self, conn: Connection, guard: Guard, stored: Stored, *, refuse: bool = False) -> bool:
        """Whether the caller may see `stored` (judged in SQL, by the search scope itself); `refuse`: raise
        the 403 of a DMP closed to the caller instead of answering False."""
        access = guard.access(conn, stored.patient_key)
        if access is not None and access.refusal is not None:
            if refuse:
                raise access.refusal
            return False
        scope = guard.scope(access)
        if scope == repo.SYSTEM_SCOPE:
            return True
        return repo.is_visible(conn, stored.resource_type, stored.id, scope)

    def read(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        stored = self.current(conn, guard, req)
        if stored.deleted:
            raise FhirError.of(410, "deleted", f"{req.resource_type}/{req.id} was deleted",
                               headers={"ETag": f'W/"{stored.version_id}"'})
        headers = content.version_headers(stored, req.base_url)
        if req.if_none_match and _etag_matches(req.if_none_match, stored.version_id):
            return FhirResponse(304, None, headers)
        summary, elements = shape.requested(req.query)
        return FhirResponse(200, shape.subset(content.resource_of(stored), summary, elements), headers)

    def vread(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        assert req.resource_type and req.id and req.version_id
        self.current(conn, guard, req)
        stored = repo.read_version(conn, req.resource_type, req.id, int(req.version_id))
        if stored is None:
            raise not_found(f"{req.resource_type}/{req.id} has no version {req.version_id}")
        if stored.deleted:
            raise FhirError.of(410, "deleted", f"Version {req.version_id} of {req.resource_type}/{req.id} "
                               "is a deletion")
        return FhirResponse(200, content.resource_of(stored), content.version_headers(stored, req.base_url))

    def search(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        return search(self, conn, guard, req)

    def history(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        return history.history(self, conn, guard, req)

    # -- write --------------------------------------------------------------------------------
    def create(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        body = content.resource_body(req.body, req.resource_type)
        # `POST Patient?identifier=...` (fhirpy's get-or-create) means the same as If-None-Exist: ignoring
        # the query would silently open a second DMP for one INS.
        condition = req.if_none_exist or _condition_in_url(req)
        if condition:
            existing = self.existing(conn, guard, req.resource_type, condition, "If-None-Exist")
            if existing is not None:
                return FhirResponse(200, self.shown(conn, guard, existing),
                                    content.version_headers(existing, req.base_url, location=True))
        return self.store_new(conn, guard, req, body, req.assigned_id or str(uuid.uuid4()))

    def existing(self, conn: Connection, guard: Guard, resource_type: str, condition: str,
                 what: str) -> Stored | None:
        """A conditional create's match. One DMP per INS: an existing Patient is found even by a professional
        not yet authorised on it (who then sees its identity only, as with the existence check)."""
        if resource_type == "Patient":
            lifecycle.lock_condition_ins(self.db, conn, condition)  # before matching: see lifecycle.claim_ins
            stored = self.match_condition(conn, guard, resource_type, condition, what, hidden_exists=True)
            if stored is not None:
                guard.touch(stored.patient_key, f"Patient/{stored.id}")
            return stored
        return self.match_condition(conn, guard, resource_type, condition, what)

    def shown(self, conn: Connection, guard: Guard, stored: Stored) -> dict:
        """A matched resource as the caller may see it: a Patient they may not open, by identity only."""
        resource = content.resource_of(stored)
        if stored.resource_type == "Patient" and not self.sees(conn, guard, stored):
            return shape.subset(resource, None, IDENTITY_ELEMENTS)
        return resource

    def store_new(self, conn: Connection, guard: Guard, req: FhirRequest, body: dict, rid: str) -> FhirResponse:
        new, response = self.prepare_new(conn, guard, req, body, rid, {})
        self.insert(conn, [new])
        return response

    def insert(self, conn: Connection, news: list[repo.NewResource]) -> None:
        """Write prepared creates; Binaries stored earlier under a new DocumentReference take its facts."""
        repo.insert_resources(conn, news)
        for new in news:
            if new.resource_type == "DocumentReference":
                repo.update_governed(conn, f"DocumentReference/{new.id}", new.facts)

    def prepare_new(self, conn: Connection, guard: Guard, req: FhirRequest, body: dict, rid: str,
                    pending: dict[tuple[str, str], str], *, conformant: bool = False,
                    ) -> tuple[repo.NewResource, FhirResponse]:
        """Everything a create does but the INSERT, so a transaction can write its creates in one go.

        `pending` maps (type, id) of resources created earlier in the same unit of work to their patient key;
        `conformant`: the transaction checked the body against its profiles already.
        """
        assert req.resource_type
        if _shipped(req):  # a transaction's creates come here without dispatch
            raise method_not_allowed(req)
        if not conformant:
            self.enforce(conn, guard, body, req.base_url)
        rtype, caller = req.resource_type, guard.caller
        when = now_utc()
        if caller.secret and rtype in DOCUMENT_TYPES:  # 6.7: a minor's secret connection
            body = labels.add_label(rtype, body, "INVISIBLE_REPRESENTANTS_LEGAUX")
        stamped = content.stamp(body, rid, 1, when)
        patient = references.patient_key(conn, rtype, stamped, rid, req.base_url, pending)
        guard.touch(patient, f"{rtype}/{rid}/_history/1")
        # None also for a DMP created earlier in this transaction: new, open, with no choices recorded yet
        dmp = guard.dmp(conn, patient) if patient and rtype != "Patient" else None
        refusal = writes.create_refusal(caller, rtype, stamped, dmp)
        if refusal is None and dmp is not None:
            refusal = feeding_refusal(caller, dmp)
        if refusal is not None:
            raise refusal
        if rtype == "Patient":  # one DMP per INS, race-safe (409 for a second one)
            lifecycle.claim_ins(self.db, conn, guard, stamped, rid)
        # MHD replacement: the documents it replaces become superseded (a DMP rule: off, like the profiles, for
        # the generic FHIR data FHIR_DMP_ENFORCE_PROFILES=false admits)
        if rtype == "DocumentReference" and self.settings.enforce_profiles:
            mhd.supersede_replaced(self, conn, guard, req, stamped, patient)
        facts = access_facts(rtype, stamped, guard.owner, when, self.matrix.codes.types,
                             self._governing(conn, guard, stamped) if rtype == "Binary" else None)
        if rtype == "DocumentReference":
            guard.pending_facts[f"DocumentReference/{rid}"] = facts
        guard.saved.append((rtype, rid))
        if rtype == "Patient" and caller.actor == "professional":
            guard.authorise_on.append(rid)
        if rtype in ("Patient", "Consent"):
            guard.forget(patient)
        new = repo.NewResource(rtype, rid, patient, fhirjson.dumps(stamped), when,
                               index_rows(rtype, stamped, req.base_url),
                               "PUT" if req.method == "PUT" else "POST", facts)
        stored = Stored(rtype, rid, 1, when, False, patient, new.content, "POST")
        return new, FhirResponse(201, stamped, content.version_headers(stored, req.base_url, location=True),
                                 resource_created=True)

    def enforce(self, conn: Connection, guard: Guard, body: dict, base_url: str) -> None:
        """A write of a profiled type conforms (422 listing every error), unless the settings turn it off."""
        if self.settings.enforce_profiles:
            validating.enforce(self.conformance, body, self.bytes_of(conn, guard, base_url))

    def bytes_of(self, conn: Connection, guard: Guard, base_url: str,
                 bundled: Callable[[str], bytes | None] | None = None) -> Callable[[str], bytes | None]:
        """Resolves an attachment url to the document's bytes: a Binary of this server the caller sees (or of
        the transaction under way, `bundled`); None when it is kept elsewhere. A Binary of this server that is
        missing or hidden is one answer (`Unresolvable`): a refusal never tells the size or hash of a document
        the caller may not read."""
        def resolve(url: str) -> bytes | None:
            found = bundled(url) if bundled is not None else None
            if found is not None:
                return found
            rid = references.local_id(url, "Binary", base_url)
            if rid is None:
                return None
            stored = repo.read_current(conn, "Binary", rid)
            if stored is None or stored.deleted or stored.content is None or not self.sees(conn, guard, stored):
                raise documents.Unresolvable(f"{url} names no Binary of this server that you may read")
            data = fhirjson.loads(stored.content).get("data")
            return documents.decoded(data) if isinstance(data, str) else b""
        return resolve

    def _governing(self, conn: Connection, guard: Guard, binary: dict) -> AccessFacts | None:
        """The facts of the DocumentReference a Binary's securityContext names, if it exists yet."""
        ref = governing_reference(binary)
        if not ref:
            return None
        if ref in guard.pending_facts:
            return guard.pending_facts[ref]
        stored = repo.read_current(conn, "DocumentReference", ref.split("/", 1)[1])
        return stored.facts if stored is not None else None

    def update(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        body = content.resource_body(req.body, req.resource_type)
        if req.id is None:
            return self._conditional_update(conn, guard, req, body)
        if body.get("id") is None:
            raise bad_request("The resource in an update must carry its id", f"{req.resource_type}.id")
        if body.get("id") != req.id:
            raise bad_request(f"The body's id {body.get('id')!r} differs from the URL's {req.id!r}",
                              f"{req.resource_type}.id")
        self.lock_for_write(conn, req)
        if repo.read_current(conn, req.resource_type, req.id) is None:
            raise FhirError.of(405, "not-supported", f"{req.resource_type}/{req.id} does not exist and this "
                               "server assigns ids itself: create it with POST")
        stored = self.current(conn, guard, req)
        return self.store_version(conn, guard, req, stored, body, "PUT")

    def _conditional_update(self, conn: Connection, guard: Guard, req: FhirRequest, body: dict) -> FhirResponse:
        assert req.resource_type
        stored = self.match_condition(conn, guard, req.resource_type, _query_string(req), "conditional update")
        if stored is None:
            if body.get("id"):
                exists = repo.read_current(conn, req.resource_type, str(body["id"])) is not None
                raise FhirError.of(409 if exists else 405, "conflict" if exists else "not-supported",
                                   "No resource matches the condition, and the body names an id: "
                                   "this server does not create resources with client-assigned ids")
            return self.store_new(conn, guard, req, body, str(uuid.uuid4()))
        if body.get("id") not in (None, stored.id):
            raise bad_request(f"The body's id {body['id']!r} is not the id of the matching resource "
                              f"({stored.id})", f"{req.resource_type}.id")
        return self.store_version(conn, guard, req, stored, body, "PUT")

    def check_change(self, conn: Connection, guard: Guard, stored: Stored, after: dict | None) -> None:
        """The caller sees `stored` (checked before); may their role change or delete it? (writes.py)"""
        access = guard.access(conn, stored.patient_key)
        before = content.resource_of(stored) if stored.content else {}
        refusal = writes.change_refusal(guard.caller, access, stored.resource_type, stored.facts.owner, before,
                                        after, guard.dmp(conn, stored.patient_key) if stored.patient_key else None)
        if refusal is not None:
            raise refusal

    def store_version(self, conn: Connection, guard: Guard, req: FhirRequest, stored: Stored, body: dict,
                      method: str, *, judged: bool = False) -> FhirResponse:
        """Write `body` as the next version; `judged`: an operation's own policy allowed this change already
        (`$close` by the médecin traitant changes `active`, which no update of theirs may)."""
        assert req.resource_type
        self.check_if_match(req, stored)
        rtype = req.resource_type
        if guard.caller.secret and rtype in DOCUMENT_TYPES:
            body = labels.add_label(rtype, body, "INVISIBLE_REPRESENTANTS_LEGAUX")
        if not judged:
            self.check_change(conn, guard, stored, body)
        self.enforce(conn, guard, body, req.base_url)
        if rtype == "Patient":
            lifecycle.claim_ins(self.db, conn, guard, body, stored.id, content.resource_of(stored))
        when = now_utc()
        stamped = content.stamp(body, stored.id, stored.version_id + 1, when)
        patient = references.patient_key(conn, rtype, stamped, stored.id, req.base_url, {})
        if patient != stored.patient_key and patient:  # moved to another DMP: that is feeding it
            dmp = guard.dmp(conn, patient)
            refusal = feeding_refusal(guard.caller, dmp) if dmp is not None and rtype != "Patient" else None
            if refusal is not None:
                raise refusal
        guard.touch(patient, f"{rtype}/{stored.id}/_history/{stored.version_id + 1}")
        facts = access_facts(rtype, stamped, stored.facts.owner, when, self.matrix.codes.types,
                             self._governing(conn, guard, stamped) if rtype == "Binary" else None)
        if rtype != "Binary" and stored.facts.governed_by:  # a VSM part keeps following its DocumentReference
            facts = vsm.still_governed(conn, facts, stored.facts.governed_by)
        guard.saved.append((rtype, stored.id))
        new = repo.write_version(conn, stored, content=fhirjson.dumps(stamped), patient_key=patient, last_updated=when,
                                 method=method, index=index_rows(rtype, stamped, req.base_url), facts=facts)
        if rtype == "DocumentReference":
            repo.update_governed(conn, f"DocumentReference/{stored.id}", facts)
        if rtype in ("Patient", "Consent"):
            guard.forget(patient)
            guard.forget(stored.patient_key)
        return FhirResponse(200, stamped, content.version_headers(new, req.base_url, location=True))

    def patch(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        if req.content_type != JSON_PATCH:
            raise FhirError.of(415, "not-supported", f"PATCH takes {JSON_PATCH}, not {req.content_type}")
        if not isinstance(req.body, list):
            raise bad_request("A JSON Patch document is a JSON array of operations", code="structure")
        if req.id is None:
            stored = self.match_condition(conn, guard, req.resource_type, _query_string(req), "conditional patch")
            if stored is None:
                raise not_found(f"No {req.resource_type} matches the condition")
        else:
            self.lock_for_write(conn, req)
            stored = self.current(conn, guard, req)
        if stored.deleted:
            raise FhirError.of(410, "deleted", f"{req.resource_type}/{stored.id} was deleted")
        self.check_if_match(req, stored)
        try:
            ops = mhd.pdsm_paths(req.body, content.resource_of(stored)) if req.resource_type == "DocumentReference" \
                else req.body
            patched = jsonpatch.JsonPatch(ops).apply(content.resource_of(stored))
        except jsonpatch.JsonPatchTestFailed as exc:
            raise unprocessable(f"JSON Patch test failed: {exc}") from exc
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            raise unprocessable(f"JSON Patch cannot be applied: {exc}") from exc
        except (jsonpatch.InvalidJsonPatch, TypeError, KeyError, AttributeError) as exc:
            raise bad_request(f"Invalid JSON Patch document: {exc}", code="structure") from exc
        if not isinstance(patched, dict) or patched.get("id") != stored.id:
            raise unprocessable("A patch may not change the resource's id", f"{req.resource_type}.id")
        if patched.get("resourceType") != req.resource_type:
            raise unprocessable("A patch may not change the resourceType", "resourceType")
        if req.resource_type == "DocumentReference":  # PDSm flux 03: metadata only
            mhd.check_metadata_update(content.resource_of(stored), patched)
        issues = content.validate_structure(patched)
        if issues:
            raise FhirError(422, issues)
        return self.store_version(conn, guard, req, stored, patched, "PATCH")

    def delete(self, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        if req.id is None:
            stored = self.match_condition(conn, guard, req.resource_type, _query_string(req), "conditional delete")
        else:
            self.lock_for_write(conn, req)
            found = repo.read_current(conn, req.resource_type, req.id)
            stored = self.current(conn, guard, req) if found is not None else None
        if stored is None or stored.deleted:
            return FhirResponse(204)
        self.check_if_match(req, stored)
        self.check_change(conn, guard, stored, None)
        guard.touch(stored.patient_key, f"{req.resource_type}/{stored.id}/_history/{stored.version_id + 1}")
        new = repo.write_version(conn, stored, content=None, patient_key=stored.patient_key,
                                 last_updated=now_utc(), method="DELETE")
        if req.resource_type in ("Patient", "Consent"):
            guard.forget(stored.patient_key)
        return FhirResponse(204, None, {"ETag": f'W/"{new.version_id}"'})

    # -- shared helpers -----------------------------------------------------------------------
    def lock_for_write(self, conn: Connection, req: FhirRequest) -> None:
        """Queue writers of one resource before its current version is read, so that concurrent
        updates apply one after the other instead of failing on the version key (PostgreSQL)."""
        self.db.lock(conn, f"{req.resource_type}/{req.id}")

    def check_if_match(self, req: FhirRequest, stored: Stored) -> None:
        if req.if_match and req.if_match.strip() != "*" and content.parse_etag(req.if_match) != stored.version_id:
            raise precondition_failed(f"If-Match {req.if_match} does not match the current version "
                                      f'W/"{stored.version_id}" of {stored.resource_type}/{stored.id}')

    def match_condition(self, conn: Connection, guard: Guard, resource_type: str, query: str, what: str, *,
                        hidden_exists: bool = False) -> Stored | None:
        """The one resource a condition names, None for none, 412 for several; race-safe. A match the caller
        may not see does not exist for them (unless `hidden_exists`)."""
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not pairs:
            raise bad_request(f"The {what} condition is empty")
        criteria = parse_criteria(resource_type, pairs)
        self.db.lock(conn, f"{resource_type}?{sorted(pairs)}")
        found = repo.find(conn, resource_type, criteria, limit=3, scope=repo.SYSTEM_SCOPE)
        if not hidden_exists:
            found = [s for s in found if self.sees(conn, guard, s)]
        if len(found) > 1:
            raise precondition_failed(f"The {what} condition '{query}' matches more than one {resource_type}")
        if found:
            guard.touch(found[0].patient_key, f"{resource_type}/{found[0].id}")
        return found[0] if found else None


def _shipped(req: FhirRequest) -> bool:
    definition = RESOURCES.get(req.resource_type or "")
    return definition is not None and definition.shipped


def _query_string(req: FhirRequest) -> str:
    """The condition of a conditional update, patch or delete: required."""
    condition = _condition_in_url(req)
    if not condition:
        raise bad_request(f"{req.method} on the type needs search parameters naming one {req.resource_type}")
    return condition


def _condition_in_url(req: FhirRequest) -> str:
    return urlencode([(k, v) for k, v in req.query if k not in ("_format", "_pretty")])


def _etag_matches(header: str, version_id: int) -> bool:
    if header.strip() == "*":  # RFC 9110 13.1.2: any current representation matches
        return True
    return any(content.parse_etag(v, "If-None-Match") == version_id for v in header.split(",") if v.strip())
