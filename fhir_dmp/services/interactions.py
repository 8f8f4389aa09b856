"""The FHIR RESTful interactions over the store: one unit of work per request.

HTTP calls `FhirService.handle`; transaction Bundles call `dispatch` for each entry inside a single
unit of work, so a REST call and a Bundle entry run exactly the same code.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlencode

import jsonpatch
import jsonpointer
from sqlalchemy import Connection

from fhir_dmp import fhirjson
from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError, bad_request, conflict, not_found, precondition_failed, unprocessable
from fhir_dmp.policy import actors, emergency
from fhir_dmp.policy.caller import Caller
from fhir_dmp.search import shape
from fhir_dmp.search.dates import now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.search.parse import parse_criteria
from fhir_dmp.services import content, history, references
from fhir_dmp.services.bundles import process_bundle
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.searching import search
from fhir_dmp.storage import repository as repo
from fhir_dmp.storage.db import Database, TransientConflict
from fhir_dmp.storage.repository import StaleVersion, Stored

JSON_PATCH = "application/json-patch+json"
_RETRIES = 5


class FhirService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.actor_rules = actors.load_actor_rules(settings.home / "terminologies" / "refused-actors.json")

    # -- entry points -------------------------------------------------------------------------
    def admit(self, caller: Caller) -> None:
        refusal = actors.refusal(caller, self.actor_rules)
        if refusal is not None:
            raise refusal
        refusal = emergency.purpose_refusal(caller)
        if refusal is not None:
            raise refusal

    def handle(self, caller: Caller, req: FhirRequest) -> FhirResponse:
        self.admit(caller)
        if req.interaction == "batch/transaction":
            return process_bundle(self, caller, req)
        return self.run(caller, req)

    def run(self, caller: Caller, req: FhirRequest) -> FhirResponse:
        """One request in its own unit of work, retried when a concurrent writer got there first."""
        write = req.method in ("POST", "PUT", "PATCH", "DELETE") and req.operation != "_search"
        for _ in range(_RETRIES):
            try:
                with self.db.transaction(write=write) as conn:
                    return self.dispatch(conn, caller, req)
            except StaleVersion:
                if req.if_match:
                    raise precondition_failed("The resource was changed by another client (If-Match)") from None
            except TransientConflict:
                continue
        raise conflict("The resource is being changed by other clients; try again")

    def dispatch(self, conn: Connection, caller: Caller, req: FhirRequest) -> FhirResponse:
        interaction = req.interaction
        definition = RESOURCES.get(req.resource_type or "")
        if interaction == "history-system":
            return self.history(conn, req)
        if definition is None or not definition.allows(interaction):
            raise method_not_allowed(req)
        handler = {
            "read": self.read, "vread": self.vread, "create": self.create, "update": self.update,
            "patch": self.patch, "delete": self.delete, "search-type": self.search,
            "history-instance": self.history, "history-type": self.history,
        }[interaction]
        return handler(conn, req)

    # -- read ---------------------------------------------------------------------------------
    def current(self, conn: Connection, req: FhirRequest) -> Stored:
        assert req.resource_type and req.id
        stored = repo.read_current(conn, req.resource_type, req.id)
        if stored is None:
            raise not_found(f"{req.resource_type}/{req.id} does not exist")
        return stored

    def read(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        stored = self.current(conn, req)
        if stored.deleted:
            raise FhirError.of(410, "deleted", f"{req.resource_type}/{req.id} was deleted",
                               headers={"ETag": f'W/"{stored.version_id}"'})
        headers = content.version_headers(stored, req.base_url)
        if req.if_none_match and _etag_matches(req.if_none_match, stored.version_id):
            return FhirResponse(304, None, headers)
        summary, elements = shape.requested(req.query)
        return FhirResponse(200, shape.subset(content.resource_of(stored), summary, elements), headers)

    def vread(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        assert req.resource_type and req.id and req.version_id
        stored = repo.read_version(conn, req.resource_type, req.id, int(req.version_id))
        if stored is None:
            raise not_found(f"{req.resource_type}/{req.id} has no version {req.version_id}")
        if stored.deleted:
            raise FhirError.of(410, "deleted", f"Version {req.version_id} of {req.resource_type}/{req.id} "
                               "is a deletion")
        return FhirResponse(200, content.resource_of(stored), content.version_headers(stored, req.base_url))

    def search(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        return search(self, conn, req)

    def history(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        return history.history(self, conn, req)

    # -- write --------------------------------------------------------------------------------
    def create(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        body = content.resource_body(req.body, req.resource_type)
        # `POST Patient?identifier=...` (fhirpy's get-or-create) means the same as If-None-Exist: ignoring
        # the query would silently open a second DMP for one INS.
        condition = req.if_none_exist or _condition_in_url(req)
        if condition:
            existing = self.match_condition(conn, req.resource_type, condition, "If-None-Exist")
            if existing is not None:
                return FhirResponse(200, content.resource_of(existing),
                                    content.version_headers(existing, req.base_url, location=True))
        return self.store_new(conn, req, body, req.assigned_id or str(uuid.uuid4()))

    def store_new(self, conn: Connection, req: FhirRequest, body: dict, rid: str) -> FhirResponse:
        new, response = self.prepare_new(conn, req, body, rid, {})
        repo.insert_resources(conn, [new])
        return response

    def prepare_new(self, conn: Connection, req: FhirRequest, body: dict, rid: str,
                    pending: dict[tuple[str, str], str]) -> tuple[repo.NewResource, FhirResponse]:
        """Everything a create does but the INSERT, so a transaction can write its creates in one go.

        `pending` maps (type, id) of resources created earlier in the same unit of work to their patient key.
        """
        assert req.resource_type
        when = now_utc()
        stamped = content.stamp(body, rid, 1, when)
        patient = references.patient_key(conn, req.resource_type, stamped, rid, req.base_url, pending)
        new = repo.NewResource(req.resource_type, rid, patient, fhirjson.dumps(stamped), when,
                               index_rows(req.resource_type, stamped, req.base_url),
                               "PUT" if req.method == "PUT" else "POST")
        stored = Stored(req.resource_type, rid, 1, when, False, patient, new.content, "POST")
        return new, FhirResponse(201, stamped, content.version_headers(stored, req.base_url, location=True),
                                 resource_created=True)

    def update(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        body = content.resource_body(req.body, req.resource_type)
        if req.id is None:
            return self._conditional_update(conn, req, body)
        if body.get("id") is None:
            raise bad_request("The resource in an update must carry its id", f"{req.resource_type}.id")
        if body.get("id") != req.id:
            raise bad_request(f"The body's id {body.get('id')!r} differs from the URL's {req.id!r}",
                              f"{req.resource_type}.id")
        self.lock_for_write(conn, req)
        stored = repo.read_current(conn, req.resource_type, req.id)
        if stored is None:
            raise FhirError.of(405, "not-supported", f"{req.resource_type}/{req.id} does not exist and this "
                               "server assigns ids itself: create it with POST")
        return self.store_version(conn, req, stored, body, "PUT")

    def _conditional_update(self, conn: Connection, req: FhirRequest, body: dict) -> FhirResponse:
        assert req.resource_type
        stored = self.match_condition(conn, req.resource_type, _query_string(req), "conditional update")
        if stored is None:
            if body.get("id"):
                exists = repo.read_current(conn, req.resource_type, str(body["id"])) is not None
                raise FhirError.of(409 if exists else 405, "conflict" if exists else "not-supported",
                                   "No resource matches the condition, and the body names an id: "
                                   "this server does not create resources with client-assigned ids")
            return self.store_new(conn, req, body, str(uuid.uuid4()))
        if body.get("id") not in (None, stored.id):
            raise bad_request(f"The body's id {body['id']!r} is not the id of the matching resource "
                              f"({stored.id})", f"{req.resource_type}.id")
        return self.store_version(conn, req, stored, body, "PUT")

    def store_version(self, conn: Connection, req: FhirRequest, stored: Stored, body: dict,
                      method: str) -> FhirResponse:
        assert req.resource_type
        self.check_if_match(req, stored)
        when = now_utc()
        stamped = content.stamp(body, stored.id, stored.version_id + 1, when)
        patient = references.patient_key(conn, req.resource_type, stamped, stored.id, req.base_url, {})
        new = repo.write_version(conn, stored, content=fhirjson.dumps(stamped), patient_key=patient, last_updated=when,
                                 method=method, index=index_rows(req.resource_type, stamped, req.base_url))
        return FhirResponse(200, stamped, content.version_headers(new, req.base_url, location=True))

    def patch(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        if req.content_type != JSON_PATCH:
            raise FhirError.of(415, "not-supported", f"PATCH takes {JSON_PATCH}, not {req.content_type}")
        if not isinstance(req.body, list):
            raise bad_request("A JSON Patch document is a JSON array of operations", code="structure")
        if req.id is None:
            stored = self.match_condition(conn, req.resource_type, _query_string(req), "conditional patch")
            if stored is None:
                raise not_found(f"No {req.resource_type} matches the condition")
        else:
            self.lock_for_write(conn, req)
            stored = self.current(conn, req)
        if stored.deleted:
            raise FhirError.of(410, "deleted", f"{req.resource_type}/{stored.id} was deleted")
        self.check_if_match(req, stored)
        try:
            patched = jsonpatch.JsonPatch(req.body).apply(content.resource_of(stored))
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
        issues = content.validate_structure(patched)
        if issues:
            raise FhirError(422, issues)
        return self.store_version(conn, req, stored, patched, "PATCH")

    def delete(self, conn: Connection, req: FhirRequest) -> FhirResponse:
        assert req.resource_type
        if req.id is None:
            stored = self.match_condition(conn, req.resource_type, _query_string(req), "conditional delete")
        else:
            self.lock_for_write(conn, req)
            stored = repo.read_current(conn, req.resource_type, req.id)
        if stored is None or stored.deleted:
            return FhirResponse(204)
        self.check_if_match(req, stored)
        new = repo.write_version(conn, stored, content=None, patient_key=stored.patient_key,
                                 last_updated=now_utc(), method="DELETE")
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

    def match_condition(self, conn: Connection, resource_type: str, query: str, what: str) -> Stored | None:
        """The one resource a condition names, None for none, 412 for several; race-safe."""
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not pairs:
            raise bad_request(f"The {what} condition is empty")
        criteria = parse_criteria(resource_type, pairs)
        self.db.lock(conn, f"{resource_type}?{sorted(pairs)}")
        found = repo.find(conn, resource_type, criteria, limit=2, scope=repo.SYSTEM_SCOPE)
        if len(found) > 1:
            raise precondition_failed(f"The {what} condition '{query}' matches more than one {resource_type}")
        return found[0] if found else None


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
