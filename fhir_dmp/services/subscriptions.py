"""Subscriptions (the R4 backport of R5 topic-based subscriptions, IHE DSUBm ITI-110/113): create, read, update,
delete and search `Subscription`, each decided by `policy/subscriptions.py` (docs/subscriptions.md).

A Subscription names a DSUBm topic in `criteria`, its filter in the `backport-filter-criteria` extension on
`_criteria` (a search of the topic's type: `DocumentReference?patient=Patient/1&type=11488-4`), a rest-hook
endpoint (allowed by FHIR_DMP_SUBSCRIPTION_ENDPOINTS), its payload content, heartbeat, timeout and max count.
It is kept in its own table with its status, which the delivery worker moves (requested -> active | error).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError, bad_request, forbidden, not_found, unprocessable
from fhir_dmp.policy import subscriptions as rules
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import Dmp
from fhir_dmp.policy.facts import owner_key
from fhir_dmp.search.dates import instant, now_utc, parse_date_range
from fhir_dmp.search.parse import parse_query
from fhir_dmp.services import content, endpoints, lookups, results, topics, wakeup, writes
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import subscriptions as store
from fhir_dmp.storage.subscriptions import SubscriptionRow

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_URL = BACKPORT + "backport-filter-criteria"
CONTENTS = ("empty", "id-only", "full-resource")
DEFAULT_TIMEOUT, MAX_TIMEOUT = 10, 60  # seconds
DEFAULT_MAX_COUNT, MAX_MAX_COUNT = 20, 100
MIN_HEARTBEAT = 1


@dataclass(frozen=True)
class Spec:
    """What the server keeps of a Subscription's body."""

    topic: topics.Topic
    criteria: str  # the filter's query (after the `?`)
    endpoint: str
    content: str
    heartbeat: int | None
    timeout: int
    max_count: int


def _extension(element: object, name: str) -> object:
    extensions = element.get("extension") if isinstance(element, dict) else None
    for ext in extensions if isinstance(extensions, list) else []:
        if isinstance(ext, dict) and ext.get("url") == BACKPORT + name:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def _whole(value: object, name: str, default: int | None, low: int, high: int) -> int | None:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise unprocessable(f"{name} must be a whole number from {low} to {high}", "Subscription.channel.extension")
    return value


def allowed_endpoint(endpoint: str, prefixes: str | None) -> bool:
    """FHIR_DMP_SUBSCRIPTION_ENDPOINTS' prefixes (any https URL when it is unset): a subscription must not make
    the server call arbitrary addresses of its own network. A prefix matches up to a boundary of the URL
    (`http://127.0.0.1` is not `http://127.0.0.1.evil.example`), and an endpoint whose authority could be read
    two ways (user info, backslashes, spaces, control characters) matches none."""
    if any(ch in endpoint for ch in "\\@ ") or any(ord(ch) < 33 or ord(ch) == 127 for ch in endpoint):
        return False
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    allowed = [p.strip() for p in (prefixes or "https://").split(",") if p.strip()]
    return any(endpoints.matches(endpoint, p) for p in allowed)


def _parameter(name: str) -> str:
    """The topic parameter a filter's parameter is: its name without modifier, or, for a chain written behind a
    type modifier (`patient:Patient.name`), the chain (`patient.name`), which the topic must allow as such."""
    base, _, modifier = name.partition(":")
    return f"{base}.{modifier.split('.', 1)[1]}" if "." in modifier else base


def parse_spec(u: Unit, body: dict) -> Spec:
    """The body's topic, filter, channel and payload, each checked (422 naming what is wrong)."""
    known = topics.load(u.rt.settings.home)
    topic = known.get(str(body.get("criteria")))
    if topic is None:
        raise unprocessable(f"criteria must be the canonical URL of a topic this server offers: "
                            f"{', '.join(sorted({t.url for t in known.values()}))}", "Subscription.criteria")
    found = _extension(body.get("_criteria"), "backport-filter-criteria")
    if not isinstance(found, str) or not found.startswith(f"{topic.resource_type}?"):
        raise unprocessable(f"The filter (extension {FILTER_URL} on Subscription.criteria) must be a search of "
                            f"{topic.resource_type}: '{topic.resource_type}?...'", "Subscription.criteria")
    query = found.split("?", 1)[1]
    names = {_parameter(name) for name, _ in parse_qsl(query, keep_blank_values=True)}
    unknown = sorted(names - topic.filters)
    if unknown:
        raise unprocessable(f"The topic does not filter by {', '.join(unknown)} (it allows "
                            f"{', '.join(sorted(topic.filters))})", "Subscription.criteria")
    names_patient = bool(names & {"patient", "patient.identifier"})
    if names_patient != topic.patient_dependent:
        raise unprocessable("A patient-dependent topic's filter names the patient (patient or patient.identifier); "
                            "a multi-patient topic's does not", "Subscription.criteria")
    channel = body.get("channel") if isinstance(body.get("channel"), dict) else {}
    if channel.get("type") != "rest-hook":
        raise unprocessable("channel.type must be rest-hook", "Subscription.channel.type")
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not allowed_endpoint(endpoint, u.rt.settings.subscription_endpoints):
        raise unprocessable("channel.endpoint is not an endpoint this server may call (FHIR_DMP_SUBSCRIPTION_"
                            "ENDPOINTS; https only by default)", "Subscription.channel.endpoint")
    refusal = endpoints.address_refusal(endpoint, u.rt.settings.subscription_endpoints)
    if refusal is not None:
        raise unprocessable(f"channel.endpoint: {refusal}", "Subscription.channel.endpoint")
    channel_headers(body)  # 422 for a header the server would not send
    if channel.get("payload") not in (None, "application/fhir+json", "application/json"):
        raise unprocessable("channel.payload: notifications are sent as application/fhir+json",
                            "Subscription.channel.payload")
    shape = _extension(channel.get("_payload"), "backport-payload-content") or "empty"
    if shape not in CONTENTS:
        raise unprocessable(f"The payload content must be one of {', '.join(CONTENTS)}",
                            "Subscription.channel.payload")
    return Spec(topic, query, endpoint, str(shape),
                _whole(_extension(channel, "backport-heartbeat-period"), "The heartbeat period", None,
                       MIN_HEARTBEAT, 86400),
                _whole(_extension(channel, "backport-timeout"), "The timeout", DEFAULT_TIMEOUT, 1, MAX_TIMEOUT) or 1,
                _whole(_extension(channel, "backport-max-count"), "The max count", DEFAULT_MAX_COUNT, 1,
                       MAX_MAX_COUNT) or 1)


_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection",
                                "expect", "upgrade", "te", "trailer", "proxy-authorization"})


def channel_headers(body: dict) -> dict[str, str]:
    """`channel.header` ("Name: value", e.g. the receiver's `Authorization`), sent with every notification;
    422 for a malformed one or one that is the HTTP exchange's own (Host, Content-Length...)."""
    channel = body.get("channel") if isinstance(body.get("channel"), dict) else {}
    out: dict[str, str] = {}
    for line in channel.get("header") or []:
        name, sep, value = str(line).partition(":")
        name, value = name.strip(), value.strip()
        if (not sep or not name or not all(33 <= ord(ch) <= 126 and ch not in "()<>@,;:\\\"/[]?={}" for ch in name)
                or not all(32 <= ord(ch) <= 126 or ch == "\t" for ch in value) or name.lower() in _FORBIDDEN_HEADERS):
            raise unprocessable(f"channel.header {str(line)[:80]!r} is not a header this server sends "
                                "('Name: value', not an HTTP exchange's own)", "Subscription.channel.header")
        out[name] = value
    return out


def filter_criteria(u: Unit, resource_type: str, query: str) -> c.Criterion:
    """The filter as the search engine reads it (400s become 422s: the filter is part of the body)."""
    try:
        return parse_query(resource_type, parse_qsl(query, keep_blank_values=True), strict=True,
                           default_count=1, max_count=1, base_url=u.req.base_url).criteria
    except FhirError as exc:
        raise unprocessable("The filter is not a search this server runs: "
                            + "; ".join(i.diagnostics for i in exc.issues), "Subscription.criteria") from None


def _dmp_of(u: Unit, spec: Spec) -> str:
    """The DMP a patient-dependent filter names (looked up as an ITI-67 of the caller's would be: 403 for a DMP
    closed to them), after the policy's word on subscribing to it; '' for a multi-patient topic."""
    criteria = filter_criteria(u, spec.topic.resource_type, spec.criteria)
    refusal = rules.scope_refusal(u.caller, spec.topic.resource_type)
    if refusal is not None:
        raise refusal
    if not spec.topic.patient_dependent:
        refusal = rules.creation_refusal(u.caller, None, False)
        if refusal is not None:
            raise refusal
        return ""
    try:
        lookup = lookups.for_search(u, spec.topic.resource_type, criteria)
    except FhirError as exc:  # a filter naming no DMP, or several: the body's fault (a 403 stays a 403)
        if exc.status != 400:
            raise
        raise unprocessable("The filter is not a search this server runs: "
                            + "; ".join(i.diagnostics for i in exc.issues), "Subscription.criteria") from None
    if not lookup.key:
        raise unprocessable("The filter's patient is not a DMP of this server", "Subscription.criteria")
    refusal = rules.creation_refusal(u.caller, lookup.access, True)
    if refusal is not None:
        raise refusal
    return lookup.key


# -- the resource as served -------------------------------------------------------------------------------------
def resource(row: SubscriptionRow, caller: Caller | None = None) -> dict:
    """The stored body with the server's status (and error) as they are now; to another than its owner (the
    patient), without the channel's headers (they carry the receiver's credentials), and one in error reads
    active, without the error (policy `shown_status`: a failed delivery follows events the patient may not see)."""
    body = fhirjson.loads(row.body)
    if caller is not None and not rules.may_manage(caller, row.owner) and isinstance(body.get("channel"), dict):
        body["channel"] = {k: v for k, v in body["channel"].items() if k not in ("header", "_header")}
    body["status"] = row.status if caller is None else rules.shown_status(caller, row.owner, row.status)
    if row.error and body["status"] == "error":
        body["error"] = row.error
    else:
        body.pop("error", None)
    return body


def _headers(row: SubscriptionRow, base_url: str, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": f'W/"{row.version_id}"', "Last-Modified": instant(row.last_updated)}
    if location:
        headers["Location"] = f"{base_url}/Subscription/{row.id}/_history/{row.version_id}"
    return headers


def visible(u: Unit, sid: str) -> SubscriptionRow:
    """The subscription if the caller may read it (404 alike when absent or not theirs to see)."""
    row = store.get(u.tx, sid)
    own = own_dmp(u)
    if row is None or not rules.may_read(u.caller, row.owner, row.patient_key, own):
        raise not_found(f"Subscription/{sid} does not exist")
    # in the trail of the DMP it is about (a multi-patient one read by a patient: theirs)
    u.touch(row.patient_key or (own.key if own is not None else ""), f"Subscription/{sid}")
    return row


def managed(u: Unit, sid: str) -> SubscriptionRow:
    """The subscription if the caller may change it: its owner or a system (the patient reads it, 403)."""
    row = visible(u, sid)
    if not rules.may_manage(u.caller, row.owner):
        raise forbidden("Only the subscription's owner may change it or replay its events")
    return row


def own_dmp(u: Unit) -> Dmp | None:
    """The DMP a patient's or representative's token acts for, as the policy sees it (None: none, or not one)."""
    key = u.own_dmp() if u.caller.actor in ("patient", "representative") else None
    return u.dmp(key) if key else None


# -- interactions ------------------------------------------------------------------------------------------------
def create(u: Unit, req: FhirRequest) -> FhirResponse:
    body = writes.parsed(u, req.body, "Subscription")
    spec = parse_spec(u, body)
    key = _dmp_of(u, spec)
    sid, when = req.assigned_id or str(uuid.uuid4()), now_utc()
    stamped = content.stamp({**body, "status": "requested"}, sid, 1, when)
    stamped.pop("error", None)
    row = SubscriptionRow(
        sid, key, owner_key(u.caller), rules.dump_subscriber(u.caller), "requested", spec.topic.url,
        spec.topic.resource_type, spec.criteria, spec.endpoint, spec.content, spec.heartbeat, spec.timeout,
        spec.max_count, u.rt.settings.base_url or req.base_url, fhirjson.dumps(stamped), 1, when)
    store.insert_subscription(u.tx, row)
    u.touch(key, f"Subscription/{sid}/_history/1")
    _wake_after_commit(u)
    return FhirResponse(201, resource(row), _headers(row, req.base_url, location=True), resource_created=True)


def read(u: Unit, req: FhirRequest) -> FhirResponse:
    assert req.id
    row = visible(u, req.id)
    return FhirResponse(200, resource(row, u.caller), _headers(row, req.base_url))


def update(u: Unit, req: FhirRequest) -> FhirResponse:
    """The owner changes the subscription: `status` off stops it; anything else asks for it (again): `requested`,
    decided again as a creation is, then a new handshake and the events kept meanwhile. Its DMP stays the one it
    was made on."""
    if req.id is None:
        raise method_not_allowed(req, diagnostics="Subscriptions are updated by id")
    body = writes.parsed(u, req.body, "Subscription")
    if body.get("id") != req.id:
        raise bad_request("The body's id must be the URL's", "Subscription.id")
    u.lock(f"Subscription/{req.id}")
    row = managed(u, req.id)
    if req.if_match and content.parse_etag(req.if_match) != row.version_id:
        raise FhirError.of(412, "conflict", f'If-Match does not match the current version W/"{row.version_id}"')
    spec = parse_spec(u, body)
    status = "off" if body.get("status") == "off" else "requested"
    # asked for again: decided again (turning it off is always allowed, even to one the patient has since blocked)
    if status == "requested" and _dmp_of(u, spec) != row.patient_key:
        raise unprocessable("A subscription stays on its DMP: create another one for another patient",
                            "Subscription.criteria")
    when, version = now_utc(), row.version_id + 1
    stamped = content.stamp({**body, "status": status}, row.id, version, when)
    new = replace(row, status=status, topic=spec.topic.url, resource_type=spec.topic.resource_type,
                  criteria=spec.criteria, endpoint=spec.endpoint, content=spec.content, heartbeat=spec.heartbeat,
                  timeout=spec.timeout, max_count=spec.max_count, body=fhirjson.dumps(stamped), version_id=version,
                  last_updated=when, failures=0, next_attempt=None, error=None)
    store.change(u.tx, row.id, {k: getattr(new, k) for k in (
        "status", "topic", "resource_type", "criteria", "endpoint", "content", "heartbeat", "timeout", "max_count",
        "body", "version_id", "last_updated", "failures", "next_attempt", "error")})
    u.touch(row.patient_key, f"Subscription/{row.id}/_history/{version}")
    _wake_after_commit(u)
    return FhirResponse(200, resource(new), _headers(new, req.base_url, location=True))


def delete(u: Unit, req: FhirRequest) -> FhirResponse:
    """Deleting a subscription removes it and its outbox (the traces of what it delivered stay)."""
    if req.id is None:
        raise method_not_allowed(req, diagnostics="Subscriptions are deleted by id")
    try:
        row = managed(u, req.id)
    except FhirError as exc:
        if exc.status == 404:
            return FhirResponse(204)
        raise
    store.remove(u.tx, row.id)
    return FhirResponse(204)


def search(u: Unit, req: FhirRequest) -> FhirResponse:
    """`Subscription?patient=...` (the patient sees every subscription on their DMP), `status`, `_id`; a
    professional lists their own."""
    listing = rules.listing(u.caller, own_dmp(u))
    key = listing.patient_key
    statuses: list[str] = []
    ids: list[str] = []
    updated: list[tuple[datetime | None, datetime | None]] = []
    for name, value in plain(req.query):
        if name in ("patient", "patient:Patient"):
            named = value.rsplit("/", 1)[-1]
            if key is not None and named != key:
                raise forbidden("A patient sees the subscriptions on their own DMP only")
            key = named
        elif name == "status":
            statuses += value.split(",")
        elif name == "_id":
            ids += value.split(",")
        elif name == "_lastUpdated":
            updated.append(_updated(value))
        elif name not in ("_count", "_format"):
            raise FhirError.of(400, "not-supported", f"Subscription searches take patient, status, _id and "
                               f"_lastUpdated, not {name}", name)
    rows = [] if listing.nothing else store.listed(u.tx, owner=listing.owner, patient_key=key,
                                                   hearers=listing.hearers, statuses=statuses, ids=ids,
                                                   updated=updated)
    u.touch(key or "", query=req.query_text)
    for row in rows:
        u.touch(row.patient_key, f"Subscription/{row.id}")
    entries = [{"fullUrl": f"{req.base_url}/Subscription/{r.id}", "resource": resource(r, u.caller),
                "search": {"mode": "match"}} for r in rows]
    links = results.page_links(req.base_url, "Subscription", list(req.query), None)
    return FhirResponse(200, results.bundle("searchset", entries, links, len(entries)))


def plain(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Search or operation parameters as given, 400 for a value with a control character (PostgreSQL's text takes
    no NUL: a 400, not a driver fault)."""
    for name, value in pairs:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise bad_request(f"{name}: a value with a control character", name)
    return pairs


def _updated(value: str) -> tuple[datetime | None, datetime | None]:
    """A `_lastUpdated` value as the range [low, high) it asks for."""
    prefix = value[:2] if value[:2] in ("eq", "ge", "gt", "le", "lt") else "eq"
    low, high = parse_date_range(value[2:] if value[:2] == prefix else value, "_lastUpdated")
    return {"eq": (low, high), "ge": (low, None), "gt": (high, None), "le": (None, high), "lt": (None, low)}[prefix]


def _wake_after_commit(u: Unit) -> None:
    u.after_commit.append(wakeup.wake)
