"""One request, from an admitted caller to its trace: the only way into the services.

    admit (once, before the body is read)  ->  route (routes.py)  ->  unit of work (unit.py):
        handler  ->  before commit: authorisations, the VSM's filing, the DMPs' new facts, subscription events  ->
        trace (AuditEvents,
        first-access notices)  ->  COMMIT  ->  after-commit hooks (webhooks)

The whole request is one transaction, its trace included; it is run again from scratch when the database aborts
it for a concurrent writer. A refusal rolls back everything and is traced in a transaction of its own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from fhir_dmp import fhirjson
from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError, precondition_failed
from fhir_dmp.policy import actors, consents, emergency, scopes
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.facts import access_facts
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.services import audit, bundles, content, events, notify, routes, scoping, vsm
from fhir_dmp.services.requests import FhirRequest, FhirResponse
from fhir_dmp.services.runtime import Runtime
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import resources
from fhir_dmp.storage.db import Database, OutcomeUnknown, TransientConflict, Unavailable
from fhir_dmp.storage.records import NewResource, StaleVersion

RETRIES = 5
RETRY_AFTER = 2  # seconds a client waits before trying again when the database is away
Work = Callable[[Unit], FhirResponse]
log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @classmethod
    def load(cls, db: Database, settings: Settings) -> Pipeline:
        return cls(Runtime.load(db, settings))

    def admit(self, caller: Caller, req: FhirRequest) -> None:
        """Refused actors (never let in) and unusable purposes of use: refused before anything else, traced."""
        refusal = actors.refusal(caller, self.rt.actor_rules) or emergency.purpose_refusal(caller)
        if refusal is not None:
            self.trace_refusal(Unit(self.rt, caller, req), refusal)
            raise refusal

    def handle(self, caller: Caller, req: FhirRequest) -> FhirResponse:
        """An admitted caller's request (`admit` first). A token with SMART scopes may do only what they grant
        as well (policy/scopes.py): checked on the whole request, its form-encoded search and entries included."""
        if caller.scopes is not None:
            refusal = scopes.refusal(caller.scopes, caller.actor, scoping.needs_of(req))
            if refusal is not None:
                self.trace_refusal(Unit(self.rt, caller, req), refusal)
                raise refusal
        if req.interaction == "batch/transaction":
            return bundles.process(self.run, caller, req, self.rt.settings.enforce_profiles, self.rt)
        return self.run(caller, req, lambda u: routes.route(req)(u, req))

    def run(self, caller: Caller, req: FhirRequest, work: Work) -> FhirResponse:
        """`work` in one unit of work, traced; retried when a concurrent writer got there first."""
        unit = Unit(self.rt, caller, req)
        unavailable = 0
        try:
            for _ in range(RETRIES):
                unit = Unit(self.rt, caller, req)
                try:
                    with self.rt.db.transaction(write=True) as tx:
                        unit.tx = tx
                        response = work(unit)
                        self._finish(unit, response.status)
                    for hook in unit.after_commit:
                        hook()
                    return response
                except StaleVersion:
                    if req.if_match:
                        raise precondition_failed("The resource was changed by another client (If-Match)") from None
                except TransientConflict:
                    continue
                except Unavailable as exc:  # a dead pooled connection: once more on a fresh one, then 503
                    unavailable += 1
                    if isinstance(exc, OutcomeUnknown) and req.method != "GET":  # again could store it twice
                        log.warning("connection lost while committing a %s: %s", req.interaction, exc)
                        raise _unavailable("The database connection was lost while committing: the change may "
                                           "or may not have been stored; read it before trying again") from None
                    if unavailable > 1:
                        log.warning("database unavailable: %s", exc)
                        raise _unavailable("The database is unavailable; try again shortly") from None
            # concurrent writers won every attempt: a transient state of the server, not the client's fault
            raise FhirError.of(503, "transient", "The resource is being changed by other clients; try again shortly",
                               headers={"Retry-After": str(RETRY_AFTER)})
        except FhirError as error:
            self.trace_refusal(unit, error)
            raise
        except Exception:  # a fault of ours: traced too (outcome 8), then answered 500 by the HTTP layer
            self.trace_refusal(unit, FhirError.of(500, "exception", "Internal error"))
            raise

    def _finish(self, u: Unit, status: int) -> None:
        """What a successful unit of work leaves before it commits: the authorisation of a professional who
        opened a DMP, the VSM's DocumentReference, the changed DMPs' facts, the trace and its notices."""
        for key in u.authorise_on:
            _record_authorisation(u, key)
        vsm.file_saved(u)
        u.store_changed_facts()
        events.capture(u)  # subscriptions: the outbox rows of the documents created (services/events.py)
        first = audit.record(u, status, None, notify.accessed(u))
        notify.notifications(u, first)

    def trace_refusal(self, failed: Unit, error: FhirError) -> None:
        """A refusal's trace, in the DMPs the refused attempt reached, after its rollback."""
        u = Unit(self.rt, failed.caller, failed.req, touched=failed.touched)
        try:
            with self.rt.db.transaction(write=True) as tx:
                u.tx = tx
                audit.record(u, error.status, error)
        except (Unavailable, TransientConflict) as exc:  # the database is away: no stack to read
            log.warning("could not trace a refused %s (%s): %s", failed.req.interaction, error.status, exc)
        except Exception:  # the refusal itself must reach the client even if its trace cannot be written
            log.exception("could not trace a refused %s", failed.req.interaction)


def _unavailable(message: str) -> FhirError:
    return FhirError.of(503, "transient", message, headers={"Retry-After": str(RETRY_AFTER)})


def _record_authorisation(u: Unit, key: str) -> None:
    """6.3: the professional who creates a DMP (with the patient's agreement) is thereby authorised on it."""
    body = {**consents.authorisation(key, u.caller.sub), "dateTime": instant(u.now)}
    rid, when = str(uuid.uuid4()), now_utc()
    stamped = content.stamp(body, rid, 1, when)
    resources.insert_resources(u.tx, [NewResource(
        "Consent", rid, key, fhirjson.dumps(stamped), when, index_rows("Consent", stamped, u.req.base_url),
        facts=access_facts("Consent", stamped, u.owner, when, u.rt.matrix.codes.types))])
    u.touch(key, f"Consent/{rid}/_history/1")
    u.forget(key)
