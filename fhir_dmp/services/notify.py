"""Notifications (dmp-reference.md 7): a professional's first access to a DMP and every emergency access
become a Communication to the patient (emergencies also to the médecin traitant), written in the unit of
work that caused them, then POSTed to `FHIR_DMP_NOTIFY_URL` when it is set.

The webhook runs after the commit on a small thread pool, retried with back-off; it never delays nor fails
the request (the Communication is stored either way, so nothing is lost if the hook is down).
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import requests
from sqlalchemy import Connection

from fhir_dmp import fhirjson
from fhir_dmp.policy.access import Access
from fhir_dmp.policy.consents import IDNATPS
from fhir_dmp.policy.facts import owner_key
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.services import content
from fhir_dmp.services.guard import Guard
from fhir_dmp.storage import repository as repo
from fhir_dmp.storage.criteria import AccessFacts

log = logging.getLogger(__name__)
CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "notification"}
_MODES = {"ETREAT": "accès en urgence (régulation, centre 15)", "BTG": "accès bris de glace"}
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fhir-dmp-notify")


def notifications(conn: Connection, guard: Guard, base_url: str) -> list[dict]:
    """Write the Communications this unit of work calls for; returns them, for the webhook."""
    caller = guard.caller
    if caller.actor != "professional":
        return []
    sent: list[tuple[str, dict, str]] = []
    for key in sorted(k for k in guard.touched if k):
        access: Access | None = guard.access(conn, key)
        if access is None or access.refusal is not None:
            continue
        first = repo.note_access(conn, key, guard.owner, guard.now)
        emergency = access.kind == "emergency"
        if not (first or emergency):
            continue
        dmp = guard.dmp(conn, key)
        treating = sorted(dmp.treating) if dmp is not None and emergency else []
        sent.append((key, *_communication(guard, key, treating, first)))
    news, bodies = [], []
    for key, body, recipient in sent:
        rid, when = str(uuid.uuid4()), now_utc()
        stamped = content.stamp(body, rid, 1, when)
        bodies.append(stamped)
        news.append(repo.NewResource("Communication", rid, key, fhirjson.dumps(stamped), when,
                                     index_rows("Communication", stamped, base_url),
                                     facts=AccessFacts(owner=recipient)))
    repo.insert_resources(conn, news)
    return bodies


def _communication(guard: Guard, key: str, treating: list[str], first: bool) -> tuple[dict, str]:
    """The notice, and the row owner: the médecin traitant reads the emergency notices addressed to them."""
    caller = guard.caller
    mode = _MODES.get(caller.purpose_of_use, "accès")
    who = f"Le professionnel {caller.sub}" + (f" (profession {caller.profession})" if caller.profession else "")
    text = f"{who} a consulté votre DMP le {instant(guard.now)} ({mode}"
    text += f", motif : {caller.access_reason})" if caller.access_reason else ")"
    if first:
        text += " : c'est son premier accès à votre DMP."
    recipients = [{"reference": f"Patient/{key}"}]
    recipients += [{"identifier": {"system": IDNATPS, "value": ps}} for ps in treating]
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [CATEGORY]}],
        "subject": {"reference": f"Patient/{key}"},
        "recipient": recipients,
        "sent": instant(guard.now),
        "payload": [{"contentString": text}],
    }, (owner_key(replace(caller, sub=treating[0])) if treating else "")


def post(url: str | None, communications: list[dict], *, attempts: int = 3, timeout: float = 5.0) -> None:
    """Hand the notifications to the webhook, in the background."""
    if not url:
        return
    for body in communications:
        _pool.submit(_deliver, url, body, attempts, timeout)


def _deliver(url: str, body: dict, attempts: int, timeout: float) -> None:
    for attempt in range(attempts):
        try:
            response = requests.post(url, data=fhirjson.dumps(body), timeout=timeout,
                                     headers={"Content-Type": "application/fhir+json"})
            if response.status_code < 500:
                return
        except requests.RequestException as exc:
            log.warning("notification webhook %s failed (attempt %d): %s", url, attempt + 1, exc)
        if attempt + 1 < attempts:  # no back-off after the last attempt: it would only hold a pool worker
            time.sleep(0.5 * 2 ** attempt)
    log.error("notification webhook %s: giving up on Communication/%s", url, body.get("id"))
