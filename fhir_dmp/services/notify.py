"""Notifications (dmp-reference.md 7): a professional's first access to a DMP and every emergency access
become a Communication to the patient (emergencies also to the médecin traitant), written in the unit of
work that caused them, then POSTed to `FHIR_DMP_NOTIFY_URL` when it is set (an after-commit hook).

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

from fhir_dmp import fhirjson
from fhir_dmp.policy.consents import IDNATPS
from fhir_dmp.policy.facts import owner_key
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.services import content
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import resources
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.records import NewResource

log = logging.getLogger(__name__)
CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "notification"}
_MODES = {"ETREAT": "accès en urgence (régulation, centre 15)", "BTG": "accès bris de glace"}
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fhir-dmp-notify")


def accessed(u: Unit) -> list[str]:
    """The DMPs a professional opened in this unit (their first opening is notified)."""
    if u.caller.actor != "professional":
        return []
    return [k for k in sorted(u.touched) if k and (a := u.access(k)) is not None and a.refusal is None]


def notifications(u: Unit, first: set[str]) -> None:
    """Write the Communications this unit of work calls for (a first access, any emergency access), and hand them
    to the webhook once the unit has committed."""
    sent: list[tuple[str, dict, str]] = []
    for key in accessed(u):
        access = u.access(key)
        emergency = access is not None and access.kind == "emergency"
        if not (key in first or emergency):
            continue
        dmp = u.dmp(key)
        treating = sorted(dmp.treating) if dmp is not None and emergency else []
        sent.append((key, *_communication(u, key, treating, key in first)))
    if not sent:
        return
    news, bodies = [], []
    for key, body, recipient in sent:
        rid, when = str(uuid.uuid4()), now_utc()
        stamped = content.stamp(body, rid, 1, when)
        bodies.append(stamped)
        news.append(NewResource("Communication", rid, key, fhirjson.dumps(stamped), when,
                                index_rows("Communication", stamped, u.req.base_url),
                                facts=AccessFacts(owner=recipient)))
    resources.insert_resources(u.tx, news)
    url = u.rt.settings.notify_url
    if url:
        u.after_commit.append(lambda: post(url, bodies))


def _communication(u: Unit, key: str, treating: list[str], first: bool) -> tuple[dict, str]:
    """The notice, and the row owner: the médecin traitant reads the emergency notices addressed to them."""
    caller = u.caller
    mode = _MODES.get(caller.purpose_of_use, "accès")
    who = f"Le professionnel {caller.sub}" + (f" (profession {caller.profession})" if caller.profession else "")
    text = f"{who} a consulté votre DMP le {instant(u.now)} ({mode}"
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
        "sent": instant(u.now),
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
