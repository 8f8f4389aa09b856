"""No leak: what the server lets each caller see of random DMPs, against a small oracle of dmp-reference.md 6.

Hypothesis generates small worlds: 2-3 DMPs, with or without a médecin traitant, some closed; documents of
types spanning the classes (10, 11, 31, 42, 52, 60, 90, 95), with random TRE_A07 visibility labels, recent or
more than a month old, deposited by the system, professionals, the
patient or a representative; the patients' Consents: authorisations, blocks, masked grants, feeding
oppositions, and for each emergency mode an opposition or a masked permit, some no longer in force (inactive,
or their period over). A small cast of professionals plays most parts (médecin traitant, depositor, named by
the Consents, caller), so that the rules meet. Then callers (each of the cast in TREAT, BTG and ETREAT, the
médecin traitant, the patient, a representative, a system, plus random ones: any profession, BTG without a
reason, a patient of another DMP) search, walking every page through `next` links
(`DocumentReference?patient=...`, `subject=`, `patient.identifier=` or no patient at all, with type, category,
status and security-label filters, `_sort`, `_count` 2 or 3, `_total=accurate`, `_include=DocumentReference:subject`;
`Patient?_id=...&_revinclude=DocumentReference:subject`), and read the documents.

The oracle below is written from docs/access-policy.md and the two terminologies CSV files, with nothing of
fhir_dmp.policy:

- who opens a DMP: a system always; a patient or representative their own DMP only (403 otherwise); a
  professional not when it is closed or they are blocked (403), then as médecin traitant or authorised,
  else by an emergency purpose (ETREAT for médecins only, BTG with a reason, else 400) the patient did not
  oppose; a professional's search must name one DMP (400);
- what they see in it: the patient all but `INVISIBLE_PATIENT` documents less than a month old; a
  representative that minus `INVISIBLE_REPRESENTANTS_LEGAUX`; a professional the types the habilitation
  matrix allows (most specific row wins, no row denies), not `MASQUE_PS` unless médecin traitant or granted
  (emergency access: when the patient permitted it for that mode, or granted this professional their masked
  documents: the grant belongs to the person, whatever mode opened the DMP, contract 6.5);
  everyone what they deposited;
- a search or read about a DMP refused answers 403; a hidden document answers 404 on read and is absent from
  pages, includes and `total`; no page repeats an entry, no document is on two pages.

Each example builds its world in a few transactions with fresh INS values (the store is not emptied between
examples, and every search names its DMP).
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fhirclient import document, json_of

TERMINOLOGIES = Path(__file__).resolve().parents[2] / "terminologies"
INS = "urn:oid:1.2.250.1.213.1.4.10"
IDNATPS = "urn:oid:1.2.250.1.71.4.2.1"
LOINC = "http://loinc.org"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_RL = "MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"
LABELS = (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_RL)
TYPE_CODES = ("11488-4", "11502-2", "34112-3", "56445-0", "18748-4", "57833-6", "11369-6", "ATTEST-RESID",
              "EXPPAT_3", "REMB")
PATIENT_TYPE = "EXPPAT_3"  # class 90: what a patient or representative may file
# (idNatPs, profession, specialty): the callers, depositors and médecins traitants of every world.
PROS = (("810000000101", "10", "SM26"), ("810000000102", "10", None), ("810000000121", "21", None),
        ("810000000140", "40", None), ("810000000160", "60", None), ("810000000161", "60", "SI01"),
        ("810000000170", "70", None), ("810000000180", "80", None), ("810000000191", "91", None))
CONSENT_SHAPES = ("authorisation", "authorisation", "block", "masked-grant", "masked-grant", "feeding-opposition")
IDENTITY = ("identifier", "name", "gender", "birthDate", "active")  # all the existence check answers
RANDOM_PROBES = 3  # beside the cast's probes


# -- the oracle's data: read directly from the CSV files ----------------------------------------------
def _rows(name: str) -> list[dict[str, str]]:
    with (TERMINOLOGIES / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


DOC_TYPES = {r["code"]: (r["system"], r["class"]) for r in _rows("dmp-document-types.csv") if r["code"] in TYPE_CODES}
MATRIX = {(r["profession"], r["specialty"], r["class"], r["type"]): r["access"] == "allow"
          for r in _rows("habilitation-matrix.csv")}
assert set(DOC_TYPES) == set(TYPE_CODES)


def matrix_allows(profession: str, specialty: str | None, code: str) -> bool:
    """The most specific matching row wins; no row denies."""
    doc_class = DOC_TYPES[code][1]
    keys = [(profession, specialty, doc_class, code), (profession, specialty, doc_class, ""),
            (profession, specialty, "", "")] if specialty else []
    keys += [(profession, "", doc_class, code), (profession, "", doc_class, ""), (profession, "", "", "")]
    return next((MATRIX[k] for k in keys if k in MATRIX), False)


# -- the world ----------------------------------------------------------------------------------------
@dataclass
class Pat:
    mt: int | None  # index into PROS of the médecin traitant
    closed: bool
    ins: str = ""
    id: str = ""

    def rep(self, which: str) -> str:
        return f"rep-{which}-{self.ins}"


@dataclass
class Doc:
    patient: int
    code: str
    labels: frozenset[str]
    age: str  # recent | old (the DMP profile requires a date)
    depositor: tuple  # ("system",) | ("pro", i) | ("patient",) | ("representative", "a" | "b")
    status: str
    age_days: int
    id: str = ""

    def owner(self, world: World) -> str:
        kind = self.depositor[0]
        if kind == "system":
            return "system|test-suite"
        if kind == "pro":
            return f"professional|{PROS[self.depositor[1]][0]}"
        pat = world.patients[self.patient]
        return f"patient|{pat.ins}" if kind == "patient" else f"representative|{pat.rep(self.depositor[1])}"

    def resource(self, subject: str, now: datetime) -> dict:
        system, doc_class = DOC_TYPES[self.code]
        return document("", subject={"reference": subject}, status=self.status,
                        type={"coding": [{"system": system, "code": self.code}]},
                        category=[{"coding": [{"system": TRE_A03, "code": doc_class}]}],
                        date=(now - timedelta(days=self.age_days, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        securityLabel=[{"coding": [{"system": TRE_A07, "code": code}]} for code in sorted(self.labels)])


@dataclass
class Consent:
    patient: int
    shape: str
    pro: int  # the professional named (for the shapes that name one; else its parity picks how it lapses)
    purpose: str  # ETREAT | BTG for the emergency shapes; TREAT | "" for an authorisation
    in_force: bool  # False: status inactive, or a period already over

    def names(self) -> bool:
        return self.shape in ("authorisation", "block", "masked-grant", "feeding-opposition")

    def resource(self, patient_id: str, now: datetime) -> dict:
        provision: dict = {"type": "deny" if self.shape in ("block", "emergency-opposition",
                                                            "feeding-opposition") else "permit"}
        if self.names():
            provision["actor"] = [{"role": {"coding": [{"system": PARTICIPATION, "code": "PRCP"}]},
                                   "reference": {"identifier": {"system": IDNATPS, "value": PROS[self.pro][0]}}}]
        if self.shape in ("emergency-opposition", "emergency-masked") or (self.shape == "authorisation"
                                                                         and self.purpose):
            provision["purpose"] = [{"system": ACT_REASON, "code": self.purpose}]
        if self.shape in ("masked-grant", "emergency-masked"):
            provision["securityLabel"] = [{"system": TRE_A07, "code": MASQUE_PS}]
        if self.shape == "feeding-opposition":
            provision["action"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                                "code": "collect"}]}]
        status = "active"
        if not self.in_force:
            if self.pro % 2:
                status = "inactive"
            else:
                provision["period"] = {"start": (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                       "end": (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        return {
            "resourceType": "Consent", "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "provision": provision,
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTIN" if provision["type"] == "permit" else "OPTOUT"}]},
        }


@dataclass
class World:
    patients: list[Pat]
    docs: list[Doc]
    consents: list[Consent]
    cast: list[int]
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))


@st.composite
def worlds(draw) -> World:  # type: ignore[no-untyped-def]
    # A small cast of professionals plays most parts (médecin traitant, depositor, named in Consents, caller),
    # so that the rules meet: a grant with an authorisation, a depositor blocked, an emergency opposed...
    cast = draw(st.lists(st.integers(0, len(PROS) - 1), min_size=1, max_size=3, unique=True))
    pros = st.sampled_from(cast) | st.sampled_from(cast) | st.integers(0, len(PROS) - 1)
    n = draw(st.integers(2, 3))
    patients = [Pat(draw(st.none() | st.integers(0, len(PROS) - 1)), draw(st.integers(0, 3)) == 0) for _ in range(n)]
    labels = st.frozensets(st.sampled_from(LABELS)) | st.frozensets(st.sampled_from(LABELS)).map({MASQUE_PS}.union)
    docs = []
    for _ in range(draw(st.integers(0, 14))):
        depositor = draw(st.one_of(st.just(("system",)), st.just(("system",)), st.tuples(st.just("pro"), pros),
                                   st.tuples(st.just("pro"), pros), st.just(("patient",)),
                                   st.tuples(st.just("representative"), st.sampled_from("ab"))))
        code = PATIENT_TYPE if depositor[0] in ("patient", "representative") else draw(st.sampled_from(TYPE_CODES))
        age = draw(st.sampled_from(("recent", "old")))
        docs.append(Doc(draw(st.sampled_from((0, 0, *range(n)))), code, draw(labels), age, depositor,
                        draw(st.sampled_from(("current", "current", "superseded"))),
                        draw(st.integers(0, 20)) if age == "recent" else draw(st.integers(40, 400))))
    consents = []
    for p in range(n):
        for mode in ("ETREAT", "BTG"):  # the patient's choice on each emergency mode, often none
            shape = draw(st.sampled_from((None, None, "emergency-opposition", "emergency-masked")))
            if shape:
                consents.append(Consent(p, shape, draw(st.integers(0, 1)), mode, draw(st.integers(0, 5)) > 0))
        for _ in range(draw(st.integers(0, 4))):
            shape = draw(st.sampled_from(CONSENT_SHAPES))
            consent = Consent(p, shape, draw(pros), draw(st.sampled_from(("", "TREAT"))), draw(st.integers(0, 5)) > 0)
            if shape == "block" and consent.pro == patients[p].mt:
                continue  # the médecin traitant cannot be blocked (422): the patient changes médecin traitant first
            consents.append(consent)
            if shape == "masked-grant" and draw(st.integers(0, 3)):  # a grant is seen only with an authorisation
                consents.append(Consent(p, "authorisation", consent.pro, "", True))
    return World(patients, docs, consents, cast)


def transaction(entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def created_ids(client, bundle: dict, claims: dict) -> list[str]:  # type: ignore[no-untyped-def]
    resp = client.as_(**claims).post("", bundle)
    assert resp.status_code == 200, (claims, resp.data)
    return [e["response"]["location"].split("/_history/")[0].rsplit("/", 1)[1] for e in json_of(resp)["entry"]]


def build(client, world: World) -> None:  # type: ignore[no-untyped-def]
    """Patients and the system's documents in one transaction, each other depositor's in one, then the
    Consents and closures (after the feeding they would refuse)."""
    entries = []
    for i, pat in enumerate(world.patients):
        pat.ins = f"1{uuid.uuid4().int % 10 ** 12:012d}"
        body = {"resourceType": "Patient", "identifier": [{"system": INS, "value": pat.ins}],
                "name": [{"family": f"LEAK{i}", "given": ["Test"]}], "gender": "female", "birthDate": "1980-01-17"}
        if pat.mt is not None:
            body["generalPractitioner"] = [{"identifier": {"system": IDNATPS, "value": PROS[pat.mt][0]}}]
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body,
                        "request": {"method": "POST", "url": "Patient"}})
    system_docs = [d for d in world.docs if d.depositor == ("system",)]
    entries += [{"resource": d.resource(entries[d.patient]["fullUrl"], world.now),
                 "request": {"method": "POST", "url": "DocumentReference"}} for d in system_docs]
    ids = created_ids(client, transaction(entries), {"actor": "system", "sub": "test-suite"})
    for pat, pid in zip(world.patients, ids[:len(world.patients)], strict=True):
        pat.id = pid
    for doc, did in zip(system_docs, ids[len(world.patients):], strict=True):
        doc.id = did
    by_owner: dict[str, list[Doc]] = {}
    for doc in world.docs:
        if doc.depositor != ("system",):
            by_owner.setdefault(doc.owner(world), []).append(doc)
    for docs in by_owner.values():
        first = docs[0]
        pat = world.patients[first.patient]
        if first.depositor[0] == "pro":
            sub, profession, specialty = PROS[first.depositor[1]]
            claims = {"actor": "professional", "sub": sub, "profession": profession,
                      **({"specialty": specialty} if specialty else {})}
        elif first.depositor[0] == "patient":
            claims = {"actor": "patient", "sub": pat.ins, "patient": pat.ins}
        else:
            claims = {"actor": "representative", "sub": pat.rep(first.depositor[1]), "patient": pat.ins}
        bundle = transaction([{"resource": d.resource(f"Patient/{world.patients[d.patient].id}", world.now),
                               "request": {"method": "POST", "url": "DocumentReference"}} for d in docs])
        for doc, did in zip(docs, created_ids(client, bundle, claims), strict=True):
            doc.id = did
    entries = [{"resource": c.resource(world.patients[c.patient].id, world.now),
                "request": {"method": "POST", "url": "Consent"}} for c in world.consents]
    for pat in world.patients:
        if pat.closed:
            resp = client.get(f"Patient/{pat.id}")
            assert resp.status_code == 200, resp.data
            entries.append({"resource": {**json_of(resp), "active": False},
                            "request": {"method": "PUT", "url": f"Patient/{pat.id}"}})
    if entries:
        created_ids(client, transaction(entries), {"actor": "system", "sub": "test-suite"})


# -- callers --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Who:
    kind: str  # system | professional | patient | representative
    pro: int = -1
    purpose: str = "TREAT"
    reason: bool = True  # BTG with its access_reason
    patient: int = -1  # whose INS a patient's or representative's token carries
    rep: str = "a"

    def claims(self, world: World) -> dict:
        if self.kind == "system":
            return {"actor": "system", "sub": "leak-oracle"}
        if self.kind in ("patient", "representative"):
            pat = world.patients[self.patient]
            return {"actor": self.kind, "sub": pat.ins if self.kind == "patient" else pat.rep(self.rep),
                    "patient": pat.ins}
        sub, profession, specialty = PROS[self.pro]
        out = {"actor": "professional", "sub": sub, "profession": profession, "purpose_of_use": self.purpose}
        if specialty:
            out["specialty"] = specialty
        if self.purpose == "BTG" and self.reason:
            out["access_reason"] = "Patient inconscient aux urgences"
        return out

    def owner(self, world: World) -> str:
        claims = self.claims(world)
        return f"{claims['actor']}|{claims['sub']}"


@st.composite
def callers(draw, world: World, target: int) -> Who:  # type: ignore[no-untyped-def]
    kind = draw(st.sampled_from(("professional", "professional", "professional", "treating", "patient",
                                 "representative", "system")))
    if kind == "system":
        return Who("system")
    if kind in ("patient", "representative"):
        other = draw(st.integers(0, len(world.patients) - 1))
        return Who(kind, patient=target if draw(st.integers(0, 3)) else other, rep=draw(st.sampled_from("ab")))
    pro = draw(st.sampled_from(world.cast) | st.sampled_from(world.cast) | st.integers(0, len(PROS) - 1))
    if kind == "treating" and world.patients[target].mt is not None:
        pro = world.patients[target].mt  # type: ignore[assignment]
    modes = st.sampled_from(("TREAT", "BTG", "ETREAT"))
    chosen = sorted({c.purpose for c in world.consents if c.patient == target and "emergency" in c.shape})
    purpose = draw(modes | st.sampled_from(chosen) if chosen else modes)  # often a mode the patient decided on
    return Who("professional", pro, purpose, reason=purpose != "BTG" or draw(st.integers(0, 9)) > 0)


# -- the oracle -------------------------------------------------------------------------------------------
def in_force(world: World, p: int, shape: str) -> list[Consent]:
    return [c for c in world.consents if c.patient == p and c.shape == shape and c.in_force]


def standing(who: Who, world: World, p: int) -> tuple[int, str, bool]:
    """(status, kind, sees_masked) of the caller in DMP `p`: 400 or 403 refuse everything about it (kind
    `blocked`: not even the existence check)."""
    if who.kind == "professional" and who.purpose == "BTG" and not who.reason:
        return 400, "", False
    if who.kind == "system":
        return 200, "system", True
    if who.kind in ("patient", "representative"):
        return (200 if who.patient == p else 403), who.kind, False
    pat = world.patients[p]
    if any(c.pro == who.pro for c in in_force(world, p, "block")):
        return 403, "blocked", False
    if pat.closed:
        return 403, "", False
    treating = pat.mt == who.pro
    if treating or any(c.pro == who.pro and c.purpose in ("", "TREAT") for c in in_force(world, p, "authorisation")):
        return 200, "professional", treating or any(c.pro == who.pro for c in in_force(world, p, "masked-grant"))
    if who.purpose == "ETREAT" and PROS[who.pro][1] != "10":
        return 403, "", False
    if who.purpose in ("ETREAT", "BTG"):
        if any(c.purpose == who.purpose for c in in_force(world, p, "emergency-opposition")):
            return 403, "", False
        # 6.5: the patient's permit for that mode, or a personal grant (it belongs to the person, whatever mode)
        return 200, "emergency", (any(c.purpose == who.purpose for c in in_force(world, p, "emergency-masked"))
                                  or any(c.pro == who.pro for c in in_force(world, p, "masked-grant")))
    return 403, "", False


def visible(who: Who, world: World, doc: Doc) -> bool:
    """May the caller, let into the document's DMP, see it?"""
    status, kind, sees_masked = standing(who, world, doc.patient)
    assert status == 200
    if kind == "system" or doc.owner(world) == who.owner(world):
        return True
    if kind in ("patient", "representative"):
        if INVISIBLE_PATIENT in doc.labels and doc.age != "old":
            return False
        return kind == "patient" or INVISIBLE_RL not in doc.labels
    _, profession, specialty = PROS[who.pro]
    return matrix_allows(profession, specialty, doc.code) and (sees_masked or MASQUE_PS not in doc.labels)


# -- searches -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Search:
    form: str  # documents | patient (by _id) | identity (by INS: the existence check) | unnamed
    naming: str = "patient"  # patient | subject | patient.identifier
    types: tuple[str, ...] = ()
    doc_class: str | None = None
    status: str | None = None
    label: str | None = None
    sort: str | None = None
    count: int = 3
    include: bool = False

    def params(self, world: World, target: int) -> tuple[str, list[tuple[str, str]]]:
        pat = world.patients[target]
        if self.form in ("patient", "identity"):
            named = ("_id", pat.id) if self.form == "patient" else ("identifier", f"{INS}|{pat.ins}")
            return "Patient", [named, ("_revinclude", "DocumentReference:subject"), ("_total", "accurate")]
        params: list[tuple[str, str]] = []
        if self.form == "documents":
            params.append({"patient": ("patient", pat.id), "subject": ("subject", f"Patient/{pat.id}"),
                           "patient.identifier": ("patient.identifier", f"{INS}|{pat.ins}")}[self.naming])
        if self.types:
            params.append(("type", ",".join(f"{DOC_TYPES[t][0]}|{t}" for t in self.types)))
        if self.doc_class:
            params.append(("category", f"{TRE_A03}|{self.doc_class}"))
        if self.status:
            params.append(("status", self.status))
        if self.label:
            params.append(("security-label", f"{TRE_A07}|{self.label}"))
        if self.sort:
            params.append(("_sort", self.sort))
        if self.include:
            params.append(("_include", "DocumentReference:subject"))
        return "DocumentReference", params + [("_count", str(self.count)), ("_total", "accurate")]

    def matches(self, doc: Doc) -> bool:
        return ((not self.types or doc.code in self.types)
                and (self.doc_class is None or DOC_TYPES[doc.code][1] == self.doc_class)
                and (self.status is None or doc.status == self.status)
                and (self.label is None or self.label in doc.labels))


searches = st.one_of(
    st.builds(Search, form=st.just("documents"), naming=st.sampled_from(("patient", "patient", "subject",
                                                                         "patient.identifier")),
              types=st.lists(st.sampled_from(TYPE_CODES), max_size=2, unique=True).map(tuple)
              | st.just(()) | st.just(()),
              doc_class=st.none() | st.none() | st.sampled_from(sorted({c for _, c in DOC_TYPES.values()})),
              status=st.sampled_from((None, None, "current", "superseded")),
              label=st.sampled_from((None, None, None, *LABELS)),
              sort=st.sampled_from((None, None, "date", "-date", "_lastUpdated", "-_lastUpdated")),
              count=st.sampled_from((2, 3)),
              include=st.booleans()),
    st.just(Search("patient")),
    st.just(Search("identity")),
    st.builds(Search, form=st.just("unnamed"), sort=st.sampled_from((None, "-date")), count=st.sampled_from((2, 3))),
)


def expected_search(who: Who, world: World, target: int, search: Search) -> tuple[int, int | None, bool]:
    """(status, DMP whose documents answer, whether only the Patient's identity answers) of a search."""
    if who.kind == "professional" and who.purpose == "BTG" and not who.reason:
        return 400, None, False
    if search.form == "unnamed":
        if who.kind == "professional":
            return 400, None, False  # a professional's search must name one DMP
        target = who.patient  # patients and representatives: their own DMP
    status, kind, _ = standing(who, world, target)
    if status == 403 and who.kind == "professional" and kind != "blocked" and search.form == "identity":
        return 200, target, True  # the existence check: open to every professional not blocked, identity only
    return status, (target if status == 200 else None), False


def walk(client, path: str) -> tuple[int, list[dict]]:  # type: ignore[no-untyped-def]
    """Every page of a search, through its `next` links: (status of the first refusal or 200, bundles)."""
    pages: list[dict] = []
    url: str | None = path
    while url:
        resp = client.get(url)
        if resp.status_code != 200:
            assert not pages, (path, "a later page refused", resp.data)
            return resp.status_code, []
        body = json_of(resp)
        pages.append(body)
        nxt = next((lk["url"] for lk in body.get("link", []) if lk["relation"] == "next"), None)
        url = None if nxt is None else f"{urlsplit(nxt).path}?{urlsplit(nxt).query}"
        assert len(pages) <= 20, path
    return 200, pages


def check_search(client, world: World, who: Who, target: int, search: Search) -> None:  # type: ignore[no-untyped-def]
    rtype, params = search.params(world, target)
    path = f"{rtype}?{urlencode(params)}"
    status, dmp, identity = expected_search(who, world, target, search)
    got, pages = walk(client, path)
    context = (who, who.claims(world), path)
    assert got == status, context
    if status != 200:
        return
    assert dmp is not None
    pat = world.patients[dmp]
    allowed = set() if identity else {d.id for d in world.docs if d.patient == dmp and visible(who, world, d)}
    ids_of = {d.id: d for d in world.docs}
    for page in pages:
        keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in page.get("entry", [])]
        assert len(keys) == len(set(keys)), (context, "a duplicate on one page", keys)
    matches = [e["resource"] for page in pages for e in page.get("entry", []) if e["search"]["mode"] == "match"]
    included = [e["resource"] for page in pages for e in page.get("entry", []) if e["search"]["mode"] == "include"]
    if rtype == "Patient":
        assert [(r["resourceType"], r["id"]) for r in matches] == [("Patient", pat.id)], context
        assert all(r["resourceType"] == "DocumentReference" for r in included), context
        found, expected = [r["id"] for r in included], allowed
        assert pages[0]["total"] == 1, context
        if identity:
            assert set(matches[0]) <= {"resourceType", "id", "meta", *IDENTITY}, (context, matches[0])
            assert "SUBSETTED" in {t.get("code") for t in matches[0]["meta"].get("tag", [])}, (context, matches[0])
    else:
        assert all(r["resourceType"] == "DocumentReference" for r in matches), context
        found = [r["id"] for r in matches]
        expected = {i for i in allowed if search.matches(ids_of[i])}
        assert {page["total"] for page in pages} == {len(expected)}, (context, [p["total"] for p in pages], expected)
        for page in pages:  # `_include=DocumentReference:subject`: the DMP's Patient, on every non-empty page
            page_matches = [e for e in page.get("entry", []) if e["search"]["mode"] == "match"]
            page_included = {(e["resource"]["resourceType"], e["resource"]["id"])
                             for e in page.get("entry", []) if e["search"]["mode"] == "include"}
            assert page_included == ({("Patient", pat.id)} if search.include and page_matches else set()), context
    assert len(found) == len(set(found)), (context, "a document on two pages")
    leaked, missing = set(found) - expected, expected - set(found)
    assert not leaked and not missing, (context, {"leaked": [ids_of.get(i, i) for i in leaked],
                                                  "missing": [ids_of[i] for i in missing]})


def check_reads(client, world: World, who: Who, target: int) -> None:  # type: ignore[no-untyped-def]
    """Every document of the DMP probed and of the other DMPs the caller may open; one of each other DMP."""
    refused_once: set[int] = set()
    for doc in world.docs:
        status, _, _ = standing(who, world, doc.patient)
        if doc.patient != target and status != 200:
            if doc.patient in refused_once:
                continue
            refused_once.add(doc.patient)
        if status == 200:
            status = 200 if visible(who, world, doc) else 404
        resp = client.get(f"DocumentReference/{doc.id}")
        assert resp.status_code == status, (who, who.claims(world), doc, resp.data)
        if status == 200:
            assert json_of(resp)["id"] == doc.id


# -- the test -------------------------------------------------------------------------------------------
def cast_callers(world: World, target: int) -> list[Who]:
    """Everyone whose standing in DMP `target` the world's Consents decide: each professional of the cast in
    each mode, the médecin traitant, the patient, a representative, a system."""
    out = [Who("professional", pro, purpose) for pro in world.cast for purpose in ("TREAT", "BTG", "ETREAT")]
    if world.patients[target].mt is not None:
        out.append(Who("professional", world.patients[target].mt))  # type: ignore[arg-type]
    return out + [Who("patient", patient=target), Who("representative", patient=target), Who("system")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_nothing_leaks(client, data) -> None:  # type: ignore[no-untyped-def]
    world = data.draw(worlds(), label="world")
    build(client, world)
    probes = [(0, who, False) for who in cast_callers(world, 0)]  # DMP 0 holds more documents
    for _ in range(RANDOM_PROBES):
        other = data.draw(st.integers(0, len(world.patients) - 1), label="target")
        probes.append((other, data.draw(callers(world, other), label="caller"), True))
    for target, who, reads in probes:
        search = data.draw(searches, label="search")
        if search.form == "unnamed" and who.kind == "system":
            search = Search("documents", count=search.count)  # a system's unnamed search spans every example
        caller = client.as_(**who.claims(world))
        check_search(caller, world, who, target, search)
        if reads or data.draw(st.integers(0, 2), label="reads") == 0:
            check_reads(caller, world, who, target)
