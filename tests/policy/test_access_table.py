"""The access policy as a table (dmp-reference.md 2 and 6, docs/access-policy.md): every kind of caller against
every rule, on read, search, `_include`, `_revinclude`, instance history and Binary read.

One "world" per test function: four DMPs (fresh INS values), each with the patient's choices (Consents) and
documents chosen so that each rule decides at least one cell. `VISIBILITY` says, for every caller and every
DMP, either that the whole DMP is refused (403) or exactly which documents they see; each interaction derives
its expected answers from that one table (a document not seen: 404 on read, history and Binary; absent from
searches, includes and totals).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fhirclient import FhirTestClient, document, json_of, patient

LOINC = "http://loinc.org"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
IDNATPS = "urn:oid:1.2.250.1.71.4.2.1"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.10"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
IDENTITY_KEYS = {"resourceType", "id", "meta", "identifier", "name", "gender", "birthDate", "active"}

DENIED = 403  # the whole DMP is refused to the caller

# Document types used, with their type system and class (ASS_X16, terminologies/dmp-document-types.csv).
TYPES = {
    "ATTEST-RESID": (TRE_A05, "95"),  # attestation de résidence: no professional sees it
    "56445-0": (LOINC, "11"),  # bilan médicamenteux: dentists yes, kinés no
    "11502-2": (LOINC, "10"),  # CR d'examens biologiques: never orthophonistes
    "34112-3": (LOINC, "10"),  # CR hospitalier: never pédicures-podologues
    "11506-3": (LOINC, "10"),  # CR de suivi de soins par auxiliaire médical: every profession but pharmaciens
    "11488-4": (LOINC, "10"),  # CR de consultation: médecins and dentists only
    "EXPPAT_2": (TRE_A05, "90"),  # autre document du patient (class 90: what a patient may file)
}


# -- callers ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Actor:
    actor: str
    sub: str = ""  # patients: their DMP's INS (filled in per world)
    profession: str | None = None
    specialty: str | None = None
    of: str | None = None  # patients and representatives: the DMP whose INS their token carries
    extra: tuple[tuple[str, Any], ...] = ()

    def claims(self, world: World) -> dict:
        claims: dict[str, Any] = {"actor": self.actor, "sub": self.sub}
        if self.profession:
            claims["profession"] = self.profession
        if self.specialty:
            claims["specialty"] = self.specialty
        if self.of:
            ins = world.dmps[self.of].ins
            claims["patient"] = ins
            claims["sub"] = ins if self.actor == "patient" else f"rep-{ins}"
        return {**claims, **dict(self.extra)}


def pro(sub: str, profession: str, specialty: str | None = None, **extra: Any) -> Actor:
    return Actor("professional", sub, profession, specialty, extra=tuple(extra.items()))


BTG = {"purpose_of_use": "BTG", "access_reason": "Patient inconscient aux urgences"}

ACTORS: dict[str, Actor] = {
    "system": Actor("system", "test-suite"),
    "medecin": pro("810000000101", "10"),  # authorised (Consent) in A, closed, no_btg, no_etreat
    "medecin_btg": pro("810000000101", "10", **BTG),  # the same médecin stating BTG: keeps normal access
    "medecin_secret": pro("810000000101", "10", secret=True),  # the same, caring for a minor confidentially
    "medecin_traitant": pro("810000000102", "10", "SM26"),  # Patient.generalPractitioner of A and closed
    "grantee": pro("810000000103", "10"),  # authorised in A and granted MASQUE_PS there
    "dentiste": pro("810000000140", "40"),
    "kine": pro("810000000170", "70"),
    "orthophoniste": pro("810000000191", "91"),
    "pedicure": pro("810000000180", "80"),
    "pharmacien": pro("810000000121", "21"),
    "infirmier": pro("810000000160", "60"),
    "unauthorised": pro("810000000104", "10"),  # no Consent anywhere
    "grant_only": pro("810000000105", "10"),  # granted MASQUE_PS in A, not authorised: a grant is no authorisation
    # the same, in an emergency mode: the grant is theirs, whatever mode opened the DMP (6.5)
    "grant_only_btg": pro("810000000105", "10", **BTG),
    "grant_only_etreat": pro("810000000105", "10", purpose_of_use="ETREAT"),
    "blocked": pro("810000000106", "10"),  # authorised in A, then blocked there: the block wins
    "blocked_btg": pro("810000000106", "10", **BTG),  # blocks apply to emergencies too
    "occupational": pro("810000000107", "10", "SM25"),  # médecin du travail, even authorised in A
    "lapsed": pro("810000000110", "10"),  # authorised in A by a Consent whose period has ended
    "revoked": pro("810000000111", "10"),  # authorised in A by a Consent no longer active
    "feeding_opposed": pro("810000000112", "10"),  # authorised in A; the patient opposed their feeding only
    "insurer": Actor("insurer", "assureur-1"),
    "employer": Actor("employer", "employeur-1"),
    "btg_medecin": pro("810000000108", "10", **BTG),
    "btg_kine": pro("810000000171", "70", **BTG),
    "etreat_medecin": pro("810000000109", "10", purpose_of_use="ETREAT"),
    "etreat_infirmier": pro("810000000161", "60", purpose_of_use="ETREAT"),  # ETREAT is for médecins only
    "patient@A": Actor("patient", of="A"),
    "minor@A": Actor("patient", of="A", extra=(("secret", True),)),  # a minor's secret connection
    "representative@A": Actor("representative", of="A"),
    "patient@closed": Actor("patient", of="closed"),
    "representative@closed": Actor("representative", of="closed"),
}


# -- the patient's choices ----------------------------------------------------------------------------

def consent(pid: str, kind: str, *, actor: str | None = None, purpose: str | None = None, label: str | None = None,
            action: str | None = None, status: str = "active", ended_days_ago: int | None = None) -> dict:
    """A Consent of DMP `pid` whose top-level provision is `kind` (permit/deny), naming the professional
    `actor` (idNatPs, PRCP role), for `purpose` (v3 ActReason), over `label` (TRE_A07), `action`; its
    `provision.period` ended `ended_days_ago` days ago when given."""
    provision: dict[str, Any] = {"type": kind}
    if ended_days_ago is not None:
        provision["period"] = {"start": instant(ended_days_ago + 30), "end": instant(ended_days_ago)}
    if actor:
        provision["actor"] = [{"role": {"coding": [{"system": PARTICIPATION, "code": "PRCP"}]},
                               "reference": {"identifier": {"system": IDNATPS, "value": actor}}}]
    if purpose:
        provision["purpose"] = [{"system": ACT_REASON, "code": purpose}]
    if label:
        provision["securityLabel"] = [{"system": TRE_A07, "code": label}]
    if action:
        provision["action"] = [{"coding": [{"system": CONSENT_ACTION, "code": action}]}]
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "dateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN" if kind == "permit" else "OPTOUT"}]},
        "provision": provision,
    }


def authorise(who: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "permit", actor=ACTORS[who].sub)


def grant_masked(who: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "permit", actor=ACTORS[who].sub, label="MASQUE_PS")


def lapsed_authorisation(who: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "permit", actor=ACTORS[who].sub, ended_days_ago=1)


def revoked_authorisation(who: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "permit", actor=ACTORS[who].sub, status="inactive")


def oppose_feeding(who: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "deny", actor=ACTORS[who].sub, action="collect")


def block(who: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "deny", actor=ACTORS[who].sub)


def oppose_emergency(purpose: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "deny", purpose=purpose)


def emergency_sees_masked(purpose: str) -> Callable[[str], dict]:
    return lambda pid: consent(pid, "permit", purpose=purpose, label="MASQUE_PS")


# -- the world's DMPs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Doc:
    type: str
    labels: tuple[str, ...] = ()
    by: str = "system"  # the depositor (an ACTORS key); they also file the Binary
    age_days: int = 0  # DocumentReference.date, days ago
    relabel: tuple[str, ...] | None = None  # then a second version (by the system) with these labels


@dataclass(frozen=True)
class DmpSpec:
    docs: dict[str, Doc]
    consents: tuple[Callable[[str], dict], ...] = ()
    active: bool = True
    treating: str | None = None  # ACTORS key of the médecin traitant


PAID = ("medecin", "dentiste", "kine", "orthophoniste", "pedicure", "pharmacien", "infirmier", "grantee",
        "blocked", "occupational", "feeding_opposed")
MASKED_FOLLOWUP = Doc("11506-3", ("MASQUE_PS",))

DMPS: dict[str, DmpSpec] = {
    "A": DmpSpec(
        treating="medecin_traitant",
        consents=(*(authorise(who) for who in PAID), grant_masked("grantee"), grant_masked("grant_only"),
                  block("blocked"), lapsed_authorisation("lapsed"), revoked_authorisation("revoked"),
                  oppose_feeding("feeding_opposed")),
        docs={
            "resid": Doc("ATTEST-RESID"),
            "bilan": Doc("56445-0"),
            "biology": Doc("11502-2"),
            "hospital": Doc("34112-3"),
            "followup": Doc("11506-3"),
            "masked": MASKED_FOLLOWUP,
            "masked_own": Doc("11488-4", ("MASQUE_PS",), by="medecin"),
            "masked_later": Doc("11506-3", relabel=("MASQUE_PS",)),
            "unmasked_later": Doc("11506-3", ("MASQUE_PS",), relabel=()),
            "kine_lab": Doc("11502-2", by="kine"),  # outside the kiné's matrix, but theirs
            "inv_patient": Doc("11488-4", ("INVISIBLE_PATIENT",)),
            "inv_patient_old": Doc("11488-4", ("INVISIBLE_PATIENT",), age_days=40),
            "inv_rep": Doc("11488-4", ("INVISIBLE_REPRESENTANTS_LEGAUX",)),
            "secret": Doc("EXPPAT_2", by="minor@A"),  # the server labels it INVISIBLE_REPRESENTANTS_LEGAUX
            "secret_ps": Doc("11506-3", by="medecin_secret"),  # likewise
        },
    ),
    "closed": DmpSpec(
        active=False, treating="medecin_traitant", consents=(authorise("medecin"),),
        docs={"followup": Doc("11506-3"), "masked": MASKED_FOLLOWUP,
              "inv_patient": Doc("11488-4", ("INVISIBLE_PATIENT",))},
    ),
    "no_btg": DmpSpec(
        consents=(authorise("medecin"), oppose_emergency("BTG"), emergency_sees_masked("ETREAT")),
        docs={"followup": Doc("11506-3"), "masked": MASKED_FOLLOWUP},
    ),
    "no_etreat": DmpSpec(
        consents=(authorise("medecin"), oppose_emergency("ETREAT"), emergency_sees_masked("BTG")),
        docs={"followup": Doc("11506-3"), "masked": MASKED_FOLLOWUP},
    ),
}


# -- expectations: who sees what --------------------------------------------------------------------

A_ALL = frozenset(DMPS["A"].docs)
A_PATIENT = A_ALL - {"inv_patient"}
A_REPRESENTATIVE = A_PATIENT - {"inv_rep", "secret", "secret_ps"}
# a médecin neither depositor nor granted anything: every type but ATTEST-RESID, nothing MASQUE_PS
A_MEDECIN = frozenset({"bilan", "biology", "hospital", "followup", "unmasked_later", "kine_lab", "inv_patient",
                       "inv_patient_old", "inv_rep", "secret", "secret_ps"})
A_FOLLOWUP = frozenset({"followup", "unmasked_later", "secret_ps"})  # the 11506-3 documents not masked

EVERYONE = frozenset(ACTORS)
REFUSED_EVERYWHERE = frozenset({"unauthorised", "grant_only", "occupational", "insurer", "employer", "blocked",
                                "etreat_infirmier", "lapsed", "revoked"})

VISIBILITY_BY_DMP: dict[str, dict[str, frozenset[str] | int]] = {
    "A": {
        "system": A_ALL,
        "medecin": A_MEDECIN | {"masked_own"},  # its depositor
        "medecin_btg": A_MEDECIN | {"masked_own"},
        "medecin_secret": A_MEDECIN | {"masked_own"},
        "medecin_traitant": A_ALL - {"resid"},
        "grantee": A_ALL - {"resid"},
        "feeding_opposed": A_MEDECIN,  # a feeding opposition is no block
        "dentiste": A_MEDECIN,  # every class but 95: 11488-4, 56445-0, 11502-2, 34112-3, 11506-3, class 90
        "kine": A_FOLLOWUP | {"kine_lab"},  # not the bilan médicamenteux, not biology but their own
        "orthophoniste": A_FOLLOWUP,  # never biology
        "pedicure": A_FOLLOWUP,  # never hospital reports
        "pharmacien": frozenset({"bilan", "biology", "kine_lab"}),
        "infirmier": frozenset({"bilan", "biology", "hospital", "kine_lab", "secret"}) | A_FOLLOWUP,
        "btg_medecin": A_MEDECIN,  # emergency: as a médecin, no masked document (no permit in A)
        "grant_only_btg": A_ALL - {"resid"},  # emergency, but granted MASQUE_PS in A: as the grantee
        "grant_only_etreat": A_ALL - {"resid"},
        "etreat_medecin": A_MEDECIN,
        "btg_kine": A_FOLLOWUP,
        "patient@A": A_PATIENT,
        "minor@A": A_PATIENT,
        "representative@A": A_REPRESENTATIVE,
        "patient@closed": DENIED,
        "representative@closed": DENIED,
    },
    "closed": {
        "system": frozenset({"followup", "masked", "inv_patient"}),
        "patient@closed": frozenset({"followup", "masked"}),
        "representative@closed": frozenset({"followup", "masked"}),
    },
    "no_btg": {
        "system": frozenset({"followup", "masked"}),
        "medecin": frozenset({"followup"}),
        "medecin_btg": frozenset({"followup"}),  # authorised: the opposition to BTG does not concern them
        "medecin_secret": frozenset({"followup"}),
        "etreat_medecin": frozenset({"followup", "masked"}),  # the patient let ETREAT see masked documents
        "grant_only_etreat": frozenset({"followup", "masked"}),  # granted in A only: this DMP's own permit
    },
    "no_etreat": {
        "system": frozenset({"followup", "masked"}),
        "medecin": frozenset({"followup"}),
        "medecin_btg": frozenset({"followup"}),
        "medecin_secret": frozenset({"followup"}),
        "btg_medecin": frozenset({"followup", "masked"}),
        "btg_kine": frozenset({"followup", "masked"}),
        "grant_only_btg": frozenset({"followup", "masked"}),
        "blocked_btg": frozenset({"followup", "masked"}),  # blocked in A only: an emergency elsewhere is one
    },
}
LISTED = {dmp: frozenset(seen) for dmp, seen in VISIBILITY_BY_DMP.items()}
for _seen in VISIBILITY_BY_DMP.values():  # every caller a DMP's table does not list: the whole DMP is refused
    _seen.update(dict.fromkeys(EVERYONE - set(_seen), DENIED))

VISIBILITY: list[tuple[str, str, frozenset[str] | int]] = [
    (who, dmp, seen[who]) for dmp, seen in VISIBILITY_BY_DMP.items() for who in ACTORS
]


# -- building a world ---------------------------------------------------------------------------------

@dataclass
class Built:
    pid: str
    ins: str
    active: bool
    docs: dict[str, str] = field(default_factory=dict)  # name -> DocumentReference id
    binaries: dict[str, str] = field(default_factory=dict)  # name -> Binary id (its securityContext: the doc)
    versions: dict[str, int] = field(default_factory=dict)

    def name_of(self, rid: str) -> str:
        return next((n for n, i in self.docs.items() if i == rid), rid)


@dataclass
class World:
    client: FhirTestClient
    dmps: dict[str, Built] = field(default_factory=dict)

    def as_(self, who: str) -> FhirTestClient:
        return self.client.as_(**ACTORS[who].claims(self))


def fresh_ins() -> str:
    return f"{uuid.uuid4().int % 10**13:013d}"


def instant(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def document_of(pid: str, doc: Doc, labels: tuple[str, ...]) -> dict:
    system, doc_class = TYPES[doc.type]
    return document(pid, type={"coding": [{"system": system, "code": doc.type}]},
                    category=[{"coding": [{"system": TRE_A03, "code": doc_class}]}], date=instant(doc.age_days),
                    securityLabel=[{"coding": [{"system": TRE_A07, "code": code}]} for code in labels])


def created(response: Any, what: str) -> dict:
    assert response.status_code == 201, f"setting up {what}: {response.status_code} {response.data[:300]!r}"
    return json_of(response)


def build_world(client: FhirTestClient, names: tuple[str, ...] = tuple(DMPS)) -> World:
    """The DMPs `names`, created by the system (documents by their depositor), each with fresh INS values."""
    world = World(client)
    for name in names:
        spec = DMPS[name]
        ins = fresh_ins()
        extra: dict[str, Any] = {
            "active": spec.active,
            "telecom": [{"system": "phone", "value": "0102030405"}],
            "address": [{"line": ["1 rue de la Paix"], "city": "Paris", "postalCode": "75002"}],
        }
        if spec.treating:
            extra["generalPractitioner"] = [{"identifier": {"system": IDNATPS, "value": ACTORS[spec.treating].sub}}]
        pid = created(client.post("Patient", patient(ins, **extra)), f"Patient of {name}")["id"]
        built = world.dmps[name] = Built(pid, ins, spec.active)
        for make in spec.consents:
            created(client.post("Consent", make(pid)), f"a Consent of {name}")
        for doc_name, doc in spec.docs.items():
            depositor = world.as_(doc.by)
            body = created(depositor.post("DocumentReference", document_of(pid, doc, doc.labels)), doc_name)
            built.docs[doc_name] = body["id"]
            binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "Q29tcHRlIHJlbmR1",
                      "securityContext": {"reference": f"DocumentReference/{body['id']}"}}
            built.binaries[doc_name] = created(depositor.post("Binary", binary), f"Binary of {doc_name}")["id"]
            built.versions[doc_name] = 1
            if doc.relabel is not None:
                again = {**document_of(pid, doc, doc.relabel), "id": body["id"]}
                response = client.put(f"DocumentReference/{body['id']}", again)
                assert response.status_code == 200, f"relabelling {doc_name}: {response.data[:300]!r}"
                built.versions[doc_name] = 2
    return world


# -- interactions: each turns one row of VISIBILITY into requests and returns what went wrong -----------

Failures = list[str]


def expect(failures: Failures, what: str, response: Any, status: int) -> bool:
    if response.status_code != status:
        failures.append(f"{what}: expected {status}, got {response.status_code} {response.data[:160]!r}")
        return False
    return True


def ids_in(bundle: dict, mode: str) -> list[tuple[str, str]]:
    return [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == mode]


def doc_refs(built: Built, names: frozenset[str]) -> set[tuple[str, str]]:
    return {("DocumentReference", built.docs[n]) for n in names}


def compare(failures: Failures, what: str, got: list[tuple[str, str]], wanted: set[tuple[str, str]],
            built: Built) -> None:
    if sorted(got) != sorted(wanted):
        extra = sorted(built.name_of(i) for _, i in set(got) - wanted)
        missing = sorted(built.name_of(i) for _, i in wanted - set(got))
        duplicates = len(got) != len(set(got))
        failures.append(f"{what}: unexpected {extra}, missing {missing}{', duplicates' if duplicates else ''}")


def read(world: World, who: str, dmp: str, seen: frozenset[str] | int) -> Failures:
    failures: Failures = []
    client, built = world.as_(who), world.dmps[dmp]
    patient_status = DENIED if seen == DENIED else 200
    expect(failures, f"{who} GET Patient of {dmp}", client.get(f"Patient/{built.pid}"), patient_status)
    for name, rid in built.docs.items():
        status = DENIED if seen == DENIED else 200 if name in seen else 404
        response = client.get(f"DocumentReference/{rid}")
        what = f"{who} GET DocumentReference {dmp}.{name}"
        if expect(failures, what, response, status) and status == 200 and json_of(response)["id"] != rid:
            failures.append(f"{what}: answered {json_of(response)['id']}")
    return failures


def binary(world: World, who: str, dmp: str, seen: frozenset[str] | int) -> Failures:
    failures: Failures = []
    client, built = world.as_(who), world.dmps[dmp]
    for name, bid in built.binaries.items():
        status = DENIED if seen == DENIED else 200 if name in seen else 404
        response = client.get(f"Binary/{bid}")
        what = f"{who} GET Binary of {dmp}.{name}"
        if expect(failures, what, response, status) and status == 200:
            body, context = json_of(response), {"reference": f"DocumentReference/{built.docs[name]}"}
            if (body.get("id"), body.get("securityContext")) != (bid, context):
                failures.append(f"{what}: answered {body.get('id')} {body.get('securityContext')}")
    return failures


def history(world: World, who: str, dmp: str, seen: frozenset[str] | int) -> Failures:
    failures: Failures = []
    client, built = world.as_(who), world.dmps[dmp]
    targets = [("Patient", built.pid, "Patient", 1, seen != DENIED)]
    targets += [("DocumentReference", rid, name, built.versions[name], seen != DENIED and name in seen)
                for name, rid in built.docs.items()]
    for rtype, rid, name, versions, visible in targets:
        status = DENIED if seen == DENIED else 200 if visible else 404
        response = client.get(f"{rtype}/{rid}/_history")
        what = f"{who} GET {rtype} {dmp}.{name}/_history"
        if expect(failures, what, response, status) and status == 200:
            bundle = json_of(response)
            got = sorted((e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in bundle.get("entry", []))
            wanted = sorted((rid, str(v)) for v in range(1, versions + 1))
            if got != wanted or bundle.get("total") != versions:
                failures.append(f"{what}: versions {got}, total {bundle.get('total')}; expected {wanted}")
        if versions > 1:  # the past of a document follows its current visibility (masking hides its past too)
            expect(failures, f"{who} GET {rtype} {dmp}.{name}/_history/1", client.get(f"{rtype}/{rid}/_history/1"),
                   status)
    return failures


def search(world: World, who: str, dmp: str, seen: frozenset[str] | int) -> Failures:
    failures: Failures = []
    client, built = world.as_(who), world.dmps[dmp]
    for query in (f"patient={built.pid}", f"subject=Patient/{built.pid}", f"patient.identifier={INS_NIR}|{built.ins}"):
        what = f"{who} DocumentReference?{query.split('=')[0]}=<{dmp}>"
        response = client.get(f"DocumentReference?{query}&_total=accurate")
        if expect(failures, what, response, DENIED if seen == DENIED else 200) and seen != DENIED:
            bundle = json_of(response)
            assert isinstance(seen, frozenset)
            compare(failures, what, ids_in(bundle, "match"), doc_refs(built, seen), built)
            if bundle.get("total") != len(seen):
                failures.append(f"{what}: total {bundle.get('total')}, expected {len(seen)}")
            if ids_in(bundle, "include"):
                failures.append(f"{what}: included {ids_in(bundle, 'include')} though nothing was asked")
    what = f"{who} DocumentReference?patient=<{dmp}>&_summary=count"
    response = client.get(f"DocumentReference?patient={built.pid}&_summary=count")
    if expect(failures, what, response, DENIED if seen == DENIED else 200) and seen != DENIED:
        bundle = json_of(response)
        if bundle.get("total") != len(seen) or bundle.get("entry"):
            failures.append(f"{what}: total {bundle.get('total')}, {len(bundle.get('entry', []))} entries; "
                            f"expected {len(seen)} and none")
    return failures


def include(world: World, who: str, dmp: str, seen: frozenset[str] | int) -> Failures:
    failures: Failures = []
    client, built = world.as_(who), world.dmps[dmp]
    what = f"{who} DocumentReference?patient=<{dmp}>&_include=DocumentReference:subject"
    response = client.get(f"DocumentReference?patient={built.pid}&_include=DocumentReference:subject&_total=accurate")
    if expect(failures, what, response, DENIED if seen == DENIED else 200) and seen != DENIED:
        bundle = json_of(response)
        assert isinstance(seen, frozenset)
        compare(failures, what + " (matches)", ids_in(bundle, "match"), doc_refs(built, seen), built)
        compare(failures, what + " (includes)", ids_in(bundle, "include"),
                {("Patient", built.pid)} if seen else set(), built)
        if bundle.get("total") != len(seen):
            failures.append(f"{what}: total {bundle.get('total')}, expected {len(seen)}")
    return failures


def revinclude(world: World, who: str, dmp: str, seen: frozenset[str] | int) -> Failures:
    failures: Failures = []
    client, built = world.as_(who), world.dmps[dmp]
    what = f"{who} Patient?_id=<{dmp}>&_revinclude=DocumentReference:subject"
    response = client.get(f"Patient?_id={built.pid}&_revinclude=DocumentReference:subject&_total=accurate")
    if expect(failures, what, response, DENIED if seen == DENIED else 200) and seen != DENIED:
        bundle = json_of(response)
        assert isinstance(seen, frozenset)
        compare(failures, what + " (matches)", ids_in(bundle, "match"), {("Patient", built.pid)}, built)
        compare(failures, what + " (includes)", ids_in(bundle, "include"), doc_refs(built, seen), built)
        if bundle.get("total") != 1:
            failures.append(f"{what}: total {bundle.get('total')}, expected 1")
    return failures


INTERACTIONS: dict[str, Callable[[World, str, str, frozenset[str] | int], Failures]] = {
    "read": read, "search": search, "include": include, "revinclude": revinclude, "history": history,
    "binary": binary,
}


def test_the_table_names_every_caller_in_every_dmp() -> None:
    assert {(who, dmp) for who, dmp, _ in VISIBILITY} == {(who, dmp) for who in ACTORS for dmp in DMPS}
    assert len(VISIBILITY) == len(ACTORS) * len(DMPS)
    assert all(not REFUSED_EVERYWHERE & listed for listed in LISTED.values()), "refused callers see no DMP"
    for dmp, seen in VISIBILITY_BY_DMP.items():
        assert seen["system"] == frozenset(DMPS[dmp].docs), "the system sees everything"
        assert all(s == DENIED or s <= seen["system"] for s in seen.values())


@pytest.mark.parametrize("interaction", list(INTERACTIONS))
def test_visibility_table(client, interaction: str) -> None:
    world = build_world(client)
    check = INTERACTIONS[interaction]
    failures = [failure for who, dmp, seen in VISIBILITY for failure in check(world, who, dmp, seen)]
    assert not failures, f"{len(failures)} wrong answers:\n" + "\n".join(failures)


# -- the existence check (6.3, TD0.2): identity only, for professionals not let in ---------------------

IDENTITY, FULL = "identity", "full"

EXISTENCE: list[tuple[str, str, str | int]] = [
    ("unauthorised", "A", IDENTITY),
    ("grant_only", "A", IDENTITY),  # a grant of masked documents is no authorisation
    ("kine", "no_btg", IDENTITY),  # any allowed profession
    ("etreat_infirmier", "A", IDENTITY),  # refused emergency mode, still an allowed professional
    ("btg_medecin", "no_btg", IDENTITY),  # the patient opposed BTG
    ("medecin", "closed", IDENTITY),  # a closed DMP: its identity and active=false
    ("medecin_traitant", "closed", IDENTITY),
    ("blocked_btg", "no_btg", IDENTITY),  # blocked elsewhere (A), merely refused here (BTG opposed)
    ("occupational", "A", DENIED),
    ("insurer", "A", DENIED),
    ("employer", "A", DENIED),
    ("medecin", "A", FULL),
    ("medecin_traitant", "A", FULL),
    ("kine", "A", FULL),
    ("btg_kine", "A", FULL),
    ("system", "closed", FULL),
    ("patient@A", "A", FULL),
    ("representative@A", "A", FULL),
    ("patient@closed", "closed", FULL),
    ("patient@A", "closed", DENIED),  # another patient's DMP
    ("representative@closed", "A", DENIED),
]


# 6.3: "a patient's block refuses everything: 403; otherwise [...] except the existence check": the exception
# is for professionals without an authorisation, so that they can ask for one, not for those the patient blocked.
BLOCKED_EXISTENCE: list[tuple[str, str, str | int]] = [
    ("blocked", "A", DENIED),
    ("blocked_btg", "A", DENIED),
]


def test_existence_check_table(client) -> None:
    failures = existence_failures(build_world(client, ("A", "closed", "no_btg")), EXISTENCE)
    assert not failures, f"{len(failures)} wrong answers:\n" + "\n".join(failures)


def test_a_block_refuses_even_the_existence_check(client) -> None:
    failures = existence_failures(build_world(client, ("A",)), BLOCKED_EXISTENCE)
    assert not failures, f"{len(failures)} wrong answers:\n" + "\n".join(failures)


# The existence check answers identity "and nothing else": a criterion on an element it hides must not change
# the answer (whether the server refuses such a criterion or ignores it is its choice), or it is an oracle.
HIDDEN_CRITERIA = [  # parameter, the Patient's true value, a false one
    ("telecom", "0102030405", "0999999999"),
    ("phone", "0102030405", "0999999999"),
    ("address-city", "Paris", "Lyon"),
    ("address-postalcode", "75002", "69001"),
    ("general-practitioner:identifier", f"{IDNATPS}|{ACTORS['medecin_traitant'].sub}", f"{IDNATPS}|810000000999"),
]


def test_the_existence_check_is_no_oracle_on_hidden_elements(client) -> None:
    world = build_world(client, ("A", "closed"))
    failures: Failures = []
    for who, dmp in (("unauthorised", "A"), ("medecin", "closed")):
        caller, ins = world.as_(who), world.dmps[dmp].ins
        for param, true, false in HIDDEN_CRITERIA:
            answers = []
            for value in (true, false):
                response = caller.get(f"Patient?identifier={ins}&{param}={value}&_total=accurate")
                answers.append((response.status_code, response.status_code == 200 and sorted(
                    i for _, i in ids_in(json_of(response), "match"))))
            if answers[0] != answers[1]:
                failures.append(f"{who} Patient?identifier=<INS {dmp}>&{param}=...: the true value answers "
                                f"{answers[0]}, a false one {answers[1]}")
    assert not failures, f"{len(failures)} oracles:\n" + "\n".join(failures)


def existence_failures(world: World, table: list[tuple[str, str, str | int]]) -> Failures:
    failures: Failures = []
    for who, dmp, expected in table:
        client_, built = world.as_(who), world.dmps[dmp]
        queries = [f"Patient?identifier={built.ins}&_total=accurate",
                   f"Patient?identifier={INS_NIR}|{built.ins}&_revinclude=DocumentReference:subject"
                   + ("&_elements=telecom,address" if expected == IDENTITY else "")]
        for query in queries:
            what = f"{who} {query.replace(built.ins, f'<INS {dmp}>')}"
            response = client_.get(query)
            if not expect(failures, what, response, DENIED if expected == DENIED else 200) or expected == DENIED:
                continue
            bundle = json_of(response)
            matches = [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]
            if [m["id"] for m in matches] != [built.pid]:
                failures.append(f"{what}: matched {[m['id'] for m in matches]}, expected the Patient of {dmp}")
                continue
            found = matches[0]
            if expected == IDENTITY:
                if set(found) - IDENTITY_KEYS or not {"identifier", "name"} <= set(found):
                    failures.append(f"{what}: identity only expected, got elements {sorted(found)}")
                if found.get("active", True) is not built.active:
                    failures.append(f"{what}: active {found.get('active')!r}, expected {built.active}")
                if "SUBSETTED" not in {t.get("code") for t in found.get("meta", {}).get("tag", [])}:
                    failures.append(f"{what}: the identity answer is not tagged SUBSETTED")
                if ids_in(bundle, "include"):
                    failures.append(f"{what}: the existence check included {ids_in(bundle, 'include')}")
            elif "_revinclude" not in query and not ({"telecom", "address"} <= set(found)):
                failures.append(f"{what}: the full Patient expected, got elements {sorted(found)}")
    return failures


# -- searches that name no DMP -------------------------------------------------------------------------

NAMELESS: list[tuple[str, str, int | frozenset[tuple[str, str]]]] = [
    ("medecin", "DocumentReference", 400),
    ("medecin", "DocumentReference?type=http://loinc.org|11506-3&_total=accurate", 400),
    ("medecin", "DocumentReference?patient={A},{no_btg}", 400),  # two DMPs at once
    ("medecin_traitant", "DocumentReference?status=current", 400),
    ("medecin", "Patient", 400),
    ("medecin", "Patient?name=MARTIN", 400),
    ("medecin", "Consent", 400),
    ("kine", "DocumentReference?_total=accurate", 400),
    ("unauthorised", "DocumentReference?_total=accurate", 400),
    ("btg_medecin", "DocumentReference", 400),
    ("etreat_medecin", "Patient?family=MARTIN", 400),
    ("occupational", "DocumentReference", 403),
    ("insurer", "DocumentReference", 403),
    # patients and representatives: their own DMP, whatever the search names
    ("patient@A", "DocumentReference?_total=accurate", frozenset(("A", n) for n in A_PATIENT)),
    ("minor@A", "DocumentReference?_total=accurate", frozenset(("A", n) for n in A_PATIENT)),
    ("representative@A", "DocumentReference?_total=accurate", frozenset(("A", n) for n in A_REPRESENTATIVE)),
    ("patient@closed", "DocumentReference?_total=accurate", frozenset({("closed", "followup"), ("closed", "masked")})),
    ("system", "DocumentReference?_total=accurate&_count=100",
     frozenset((dmp, n) for dmp, spec in DMPS.items() for n in spec.docs)),
]


def test_searches_naming_no_dmp(client) -> None:
    world = build_world(client)
    failures: Failures = []
    pids = {name: built.pid for name, built in world.dmps.items()}
    for who, query, expected in NAMELESS:
        response = world.as_(who).get(query.format(**pids))
        what = f"{who} {query}"
        if not expect(failures, what, response, expected if isinstance(expected, int) else 200):
            continue
        if isinstance(expected, frozenset):
            bundle = json_of(response)
            wanted = {("DocumentReference", world.dmps[dmp].docs[n]) for dmp, n in expected}
            got = ids_in(bundle, "match")
            if sorted(got) != sorted(wanted) or bundle.get("total") != len(wanted):
                names = {i: f"{d}.{n}" for d, b in world.dmps.items() for n, i in b.docs.items()}
                failures.append(f"{what}: got {sorted(names.get(i, i) for _, i in got)} (total {bundle.get('total')})"
                                f", expected {sorted(f'{d}.{n}' for d, n in expected)}")
    assert not failures, f"{len(failures)} wrong answers:\n" + "\n".join(failures)


# -- a minor's secret connection labels what it files ---------------------------------------------------

def test_secret_connections_label_what_they_file(client) -> None:
    world = build_world(client, ("A",))
    built = world.dmps["A"]
    for name, secret in (("secret", True), ("secret_ps", True), ("masked_own", False), ("kine_lab", False)):
        doc = json_of(client.get(f"DocumentReference/{built.docs[name]}"))
        codes = {c.get("code") for concept in doc.get("securityLabel", []) for c in concept.get("coding", [])}
        assert ("INVISIBLE_REPRESENTANTS_LEGAUX" in codes) is secret, (name, codes)
        bin_ = json_of(client.get(f"Binary/{built.binaries[name]}"))
        bin_codes = {c.get("code") for c in bin_.get("meta", {}).get("security", [])}
        assert ("INVISIBLE_REPRESENTANTS_LEGAUX" in bin_codes) is secret, (name, bin_codes)
