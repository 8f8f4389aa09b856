"""The search engine against a brute-force oracle, on every backend.

Hypothesis generates small data sets (patients, DocumentReferences with random status, codes, dates at
random precisions and zones, periods with open ends, authors, security labels, identifiers) created through
the API, then random queries; the oracle below evaluates each query over the resources as they were sent,
reading the R4 rules (http://hl7.org/fhir/R4/search.html) and nothing of the server's code:

- a parameter with several values (comma) matches when any value matches; repeated parameters must all match;
- a resource matches a value when any of its values for the parameter does; one with no value never does,
  except under `:missing=true` and token `:not`, which "includes resources that have no value";
- token `code`, `system|code`, `|code` (no system), `system|` (any code of the system);
- date values and searched values are ranges [low, high) by precision, in UTC (a zone-less search value is
  read as UTC); a Period is [start.low, end.high), an absent bound being unbounded;
  eq: searched contains value; ne: not eq; gt/lt: value reaches above/below the searched range;
  ge/le: gt/lt or eq; sa/eb: value wholly above/below; ap: the ranges overlap after widening the searched
  one by 10% of its distance to now;
- reference `Type/id`, `id` (any type), an absolute URL on our base is the relative one, `:Type` modifier.

Every page is walked through its `next` links (`_count=3`); `total` must be the oracle's count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_dmp.storage.tables import metadata
from tests.fhirclient import json_of

BASE = "http://localhost/fhir"
INS = "urn:oid:1.2.250.1.213.1.4.10"
LOINC, OTHER, CAT, CAT2 = "http://loinc.org", "http://other.org/codes", "http://example.test/cat", "urn:cat2"
CONF, SEC2 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "http://example.test/sec"
STATUSES = ("current", "superseded", "entered-in-error")
TYPES = ((LOINC, "11488-4"), (LOINC, "34133-9"), (OTHER, "11488-4"), (None, "11488-4"))
CATEGORIES = ((CAT, "amb"), (CAT, "inp"), (CAT2, "amb"))
LABELS = ((CONF, "N"), (CONF, "R"), (CONF, "V"), (SEC2, "R"))
IDENTIFIERS = (("urn:docs", "A"), ("urn:docs", "C,D"), ("urn:other", "A"), (None, "A"), (None, "C,D"), (None, "C"))
AUTHORS = ("Practitioner/pr-1", "Practitioner/pr-2", "Organization/pr-1", f"{BASE}/Practitioner/pr-2",
           "http://other.example/fhir/Practitioner/pr-1")
ANCHORS = (datetime(2020, 2, 28), datetime(2020, 2, 29), datetime(2020, 12, 31), datetime(2021, 1, 1),
           datetime(2021, 6, 15))
ZONES = ("Z", "+01:00", "-05:00", "+05:30", "+14:00", "-12:00")
PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MIN, MAX = datetime.min, datetime.max
QUERIES_PER_DATA_SET = 20


# -- FHIR dates, read independently -------------------------------------------------------------------
def span(text: str) -> tuple[datetime, datetime]:
    """The UTC range [low, high) a date, dateTime or instant covers at its precision."""
    if len(text) == 4:
        return datetime(int(text), 1, 1), datetime(int(text) + 1, 1, 1)
    if len(text) == 7:
        y, m = int(text[:4]), int(text[5:7])
        return datetime(y, m, 1), datetime(y + m // 12, m % 12 + 1, 1)
    if len(text) == 10:
        low = datetime.fromisoformat(text)
        return low, low + timedelta(days=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    low = moment.astimezone(UTC).replace(tzinfo=None)
    clock = re.split(r"[Z+-]", text[11:])[0]
    if clock.count(":") == 1:
        step = timedelta(minutes=1)
    elif "." in clock:
        step = timedelta(seconds=10 ** -len(clock.split(".")[1]))
    else:
        step = timedelta(seconds=1)
    return low, low + step


def render(moment: datetime, zone: str, precision: str) -> str:
    """A UTC instant written in `zone` ("" = none), cut to `precision`."""
    offset = timedelta(0) if zone in ("", "Z") else (1 if zone[0] == "+" else -1) * timedelta(
        hours=int(zone[1:3]), minutes=int(zone[4:6]))
    local = moment + offset
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{local.microsecond // 1000:03d}"
    cut = {"year": 4, "month": 7, "day": 10, "minute": 16, "second": 19, "ms": 23}[precision]
    return text[:cut] if cut <= 10 else text[:cut] + zone


def compare(prefix: str, value: tuple[datetime, datetime], searched: tuple[datetime, datetime],
            now: datetime) -> bool:
    (lo, hi), (s_lo, s_hi) = value, searched
    contained = s_lo <= lo and hi <= s_hi
    if prefix in ("", "eq"):
        return contained
    if prefix == "ne":
        return not contained
    if prefix in ("gt", "ge"):
        return hi > s_hi or (prefix == "ge" and contained)
    if prefix in ("lt", "le"):
        return lo < s_lo or (prefix == "le" and contained)
    if prefix == "sa":
        return lo >= s_hi
    if prefix == "eb":
        return hi <= s_lo
    gap = abs(now - s_lo) / 10  # ap
    return lo < s_hi + gap and hi > s_lo - gap


# -- data ---------------------------------------------------------------------------------------------
@dataclass
class Doc:
    patient: int
    subject_form: str  # relative | absolute | versioned
    status: str
    type: tuple | None
    categories: list
    date: str | None
    period: dict
    authors: list
    labels: list
    identifiers: list
    id: str = ""

    def resource(self, patient_ids: list[str]) -> dict:
        pid = patient_ids[self.patient]
        subject = {"relative": f"Patient/{pid}", "absolute": f"{BASE}/Patient/{pid}",
                   "versioned": f"Patient/{pid}/_history/1"}[self.subject_form]
        out: dict = {"resourceType": "DocumentReference", "status": self.status, "subject": {"reference": subject},
                     "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}]}
        if self.type:
            out["type"] = {"coding": [coding(*self.type)]}
        if self.categories:
            out["category"] = [{"coding": [coding(*c)]} for c in self.categories]
        if self.date:
            out["date"] = self.date
        if self.period:
            out["context"] = {"period": self.period}
        if self.authors:
            out["author"] = [{"reference": a} for a in self.authors]
        if self.labels:
            out["securityLabel"] = [{"coding": [coding(*c)]} for c in self.labels]
        if self.identifiers:
            out["identifier"] = [{"value": v} if s is None else {"system": s, "value": v} for s, v in self.identifiers]
        return out


def coding(system: str | None, code: str) -> dict:
    return {"code": code} if system is None else {"system": system, "code": code}


instants = st.builds(lambda day, s, ms: day + timedelta(seconds=s, milliseconds=ms), st.sampled_from(ANCHORS),
                     st.integers(0, 86399), st.sampled_from((0, 0, 250, 999)))


@st.composite
def periods(draw) -> dict:  # type: ignore[no-untyped-def]
    first, second = sorted(draw(st.lists(instants, min_size=2, max_size=2)))
    out = {}
    for key, moment in (("start", first), ("end", second)):
        if draw(st.booleans()):
            precision = draw(st.sampled_from(("year", "month", "day", "second")))
            out[key] = render(moment, draw(st.sampled_from(ZONES)), precision)
    return out


def docs(n_patients: int):  # type: ignore[no-untyped-def]
    date = st.one_of(st.none(), st.builds(lambda m, z, p: render(m, z, p), instants, st.sampled_from(ZONES),
                                          st.sampled_from(("second", "ms"))))
    return st.builds(
        Doc, patient=st.integers(0, n_patients - 1),
        subject_form=st.sampled_from(("relative", "absolute", "versioned")),
        status=st.sampled_from(STATUSES), type=st.one_of(st.none(), st.sampled_from(TYPES)),
        categories=st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True), date=date, period=periods(),
        authors=st.lists(st.sampled_from(AUTHORS), max_size=2, unique=True),
        labels=st.lists(st.sampled_from(LABELS), max_size=2, unique=True),
        identifiers=st.lists(st.sampled_from(IDENTIFIERS), max_size=2, unique=True))


@dataclass
class World:
    patients: list[str]
    docs: list[Doc]
    ins: list[str] = field(default_factory=list)

    def date_texts(self, code: str) -> list[str]:
        """The dates of a parameter as written in the data set (so that searches hit the values' boundaries)."""
        if code == "date":
            return [d.date for d in self.docs if d.date]
        return [v for d in self.docs for v in d.period.values()]


# -- the oracle ---------------------------------------------------------------------------------------
def token_match(query: str, system: str | None, code: str) -> bool:
    if "|" not in query:
        return code == query
    q_system, _, q_code = query.partition("|")
    if q_system == "":
        return system is None and code == q_code
    return system == q_system and (q_code == "" or code == q_code)


def local(reference: str) -> str | None:
    """`Type/id` for a reference to this server (relative, absolute on our base, versioned), else None."""
    if reference.startswith(BASE + "/"):
        reference = reference[len(BASE) + 1:]
    parts = reference.split("/")
    return "/".join(parts[:2]) if len(parts) in (2, 4) and "://" not in reference else None


def ref_match(query: str, modifier: str, reference: str) -> bool:
    target = local(reference)
    if query.startswith(BASE + "/"):
        query = query[len(BASE) + 1:]
    if "://" in query:
        return reference == query
    if target is None:
        return False
    kind, ident = target.split("/")
    if "/" in query:
        return target == query and modifier in ("", kind)
    return ident == query and modifier in ("", kind)


def doc_values(doc: Doc, code: str, world: World) -> list:
    if code == "status":
        return [(None, doc.status)]
    if code == "type":
        return [doc.type] if doc.type else []
    if code == "category":
        return doc.categories
    if code == "security-label":
        return doc.labels
    if code == "identifier":
        return doc.identifiers
    if code == "date":
        return [span(doc.date)] if doc.date else []
    if code == "period":
        if not doc.period:
            return []
        low = span(doc.period["start"])[0] if "start" in doc.period else MIN
        high = span(doc.period["end"])[1] if "end" in doc.period else MAX
        return [(low, high)]
    if code == "author":
        return doc.authors
    if code == "patient":
        return [f"Patient/{world.patients[doc.patient]}"]
    if code == "patient.identifier":
        return [(INS, world.ins[doc.patient])]
    raise AssertionError(code)


def unescape_split(value: str) -> list[str]:
    return [v.replace("\\,", ",") for v in re.split(r"(?<!\\),", value)]


def oracle(doc: Doc, world: World, name: str, value: str, now: datetime) -> bool:
    code, _, modifier = name.partition(":")
    if code == "_id":
        hit = doc.id in unescape_split(value)
        return not hit if modifier == "not" else hit
    values = doc_values(doc, code, world)
    if modifier == "missing":
        return (not values) == (value == "true")
    alternatives = unescape_split(value)
    if code in ("date", "period"):
        def one(alt: str, v) -> bool:  # type: ignore[no-untyped-def]
            prefix = alt[:2] if alt[:2] in PREFIXES and alt[2:3].isdigit() else ""
            return compare(prefix, v, span(alt[len(prefix):]), now)
    elif code in ("author", "patient"):
        def one(alt: str, v) -> bool:  # type: ignore[no-untyped-def]
            return ref_match(alt, modifier, v)
    else:
        def one(alt: str, v) -> bool:  # type: ignore[no-untyped-def]
            return token_match(alt, v[0], v[1])
    hit = any(one(alt, v) for alt in alternatives for v in values)
    return not hit if modifier == "not" else hit


# -- queries ------------------------------------------------------------------------------------------
def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


def token_query(pool) -> st.SearchStrategy[str]:  # type: ignore[no-untyped-def]
    def forms(pair) -> list[str]:  # type: ignore[no-untyped-def]
        system, code = pair
        return [escape(code), f"|{escape(code)}" if system is None else f"{system}|{escape(code)}",
                f"{system or 'urn:none'}|", f"{system or LOINC}|{escape(code)}"]
    one = st.sampled_from(pool).flatmap(lambda pair: st.sampled_from(forms(pair)))
    return st.lists(one, min_size=1, max_size=2).map(",".join)


@st.composite
def date_query(draw, world: World, code: str) -> str:  # type: ignore[no-untyped-def]
    def one() -> str:
        written = world.date_texts(code)
        source = draw(st.sampled_from(("written", "next", "other"))) if written else "other"
        if source == "written":  # a value as the data holds it: equal ranges
            return draw(st.sampled_from(PREFIXES)) + draw(st.sampled_from(written))
        if source == "next":  # the range just after a value, at its precision: adjacent ranges
            text = draw(st.sampled_from(written))
            precision = {4: "year", 7: "month", 10: "day"}.get(len(text), "ms" if "." in text else "second")
            return draw(st.sampled_from(PREFIXES)) + render(span(text)[1], "" if len(text) <= 10 else "Z", precision)
        moment = draw(st.sampled_from([span(t)[0] for t in written] + list(ANCHORS)))
        precision = draw(st.sampled_from(("year", "month", "day", "minute", "second", "ms")))
        zone = "" if precision in ("year", "month", "day") else draw(st.sampled_from(("", "Z", "+01:00", "-05:00")))
        return draw(st.sampled_from(PREFIXES)) + render(moment, zone, precision)
    return ",".join(one() for _ in range(draw(st.integers(1, 2))))


@st.composite
def query_param(draw, world: World) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    code = draw(st.sampled_from(("status", "type", "category", "security-label", "identifier", "date", "period",
                                 "author", "patient", "patient.identifier", "_id", "date", "period", "date",
                                 "period", "author")))
    if code not in ("_id", "patient.identifier", "status") and draw(st.integers(0, 7)) == 0:
        return f"{code}:missing", draw(st.sampled_from(("true", "false")))
    tokens = {"type": TYPES, "category": CATEGORIES, "security-label": LABELS, "identifier": IDENTIFIERS}
    if code == "status":
        value = ",".join(draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2)))
        return (f"{code}:not" if draw(st.booleans()) else code), value
    if code in tokens:
        return (f"{code}:not" if draw(st.integers(0, 3)) == 0 else code), draw(token_query(tokens[code]))
    if code in ("date", "period"):
        return code, draw(date_query(world, code))
    if code == "author":
        pick = draw(st.sampled_from(("Practitioner/pr-1", "pr-1", "Organization/pr-1", "pr-2", "Practitioner/pr-2",
                                     f"{BASE}/Practitioner/pr-1", "http://other.example/fhir/Practitioner/pr-1",
                                     ":Practitioner=pr-1", ":Organization=pr-1", ":PractitionerRole=pr-2")))
        if pick.startswith(":"):
            modifier, value = pick[1:].split("=")
            return f"author:{modifier}", value
        return code, pick
    if code == "patient":
        some = st.one_of(st.sampled_from(world.patients), st.sampled_from(world.patients), st.just("no-such-patient"))
        picks = draw(st.lists(some, min_size=1, max_size=2))
        form = draw(st.sampled_from(("{}", "Patient/{}", BASE + "/Patient/{}")))
        return code, ",".join(form.format(p) for p in picks)
    if code == "patient.identifier":
        return code, ",".join(f"{INS}|{v}" for v in draw(st.lists(st.sampled_from(world.ins), min_size=1,
                                                                        max_size=2)))
    ids = draw(st.lists(st.sampled_from([d.id for d in world.docs] + ["nope"]), min_size=1, max_size=3))
    return ("_id:not" if draw(st.booleans()) else "_id"), ",".join(ids)


# -- the test -----------------------------------------------------------------------------------------
def reset(database) -> None:  # type: ignore[no-untyped-def]
    """Empty every table (DELETE: portable), so that each example starts from nothing."""
    with database.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


def server_ids(client, params: list[tuple[str, str]]) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    url, found, total, pages = f"DocumentReference?{urlencode(params + [('_count', '3')])}", [], None, 0
    while url:
        resp = client.get(url)
        assert resp.status_code == 200, (params, resp.data)
        body = json_of(resp)
        total = body["total"] if total is None else total
        assert body["total"] == total  # stable across pages
        found += [e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]
        nxt = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        url = None if nxt is None else f"{urlsplit(nxt).path}?{urlsplit(nxt).query}"
        pages += 1
        assert pages <= 10
    return found, total


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), n_patients=st.integers(2, 3))
def test_server_agrees_with_the_oracle(client, database, data, n_patients: int) -> None:
    reset(database)
    ins = [f"18001751234{i:02d}" for i in range(n_patients)]
    patients = []
    for value in ins:
        resp = client.post("Patient", {"resourceType": "Patient", "identifier": [{"system": INS, "value": value}]})
        assert resp.status_code == 201, resp.data
        patients.append(json_of(resp)["id"])
    world = World(patients, data.draw(st.lists(docs(n_patients), min_size=5, max_size=15), label="docs"), ins)
    for doc in world.docs:
        resp = client.post("DocumentReference", doc.resource(patients))
        assert resp.status_code == 201, (doc, resp.data)
        doc.id = json_of(resp)["id"]
    asked: set[str] = set()
    for _ in range(2 * QUERIES_PER_DATA_SET):
        params = data.draw(st.lists(query_param(world), min_size=1, max_size=3), label="query")
        if repr(params) in asked:  # hypothesis often draws the same query again: ask new ones only
            continue
        asked.add(repr(params))
        if len(asked) > QUERIES_PER_DATA_SET:
            break
        now = datetime.now(UTC).replace(tzinfo=None)
        expected = {d.id for d in world.docs if all(oracle(d, world, n, v, now) for n, v in params)}
        found, total = server_ids(client, params)
        assert len(found) == len(set(found)), (params, "a resource on two pages")
        assert set(found) == expected, (params, [d for d in world.docs if d.id in set(found) ^ expected])
        assert total == len(expected), params
