"""`patient.identifier=<INS>` runs as `patient=<id>`: the chain on the patient is resolved to the DMP's key first
(one indexed lookup), so its plan does not depend on the statistics."""

from __future__ import annotations

from fhir_dmp.policy import consents
from fhir_dmp.policy.access import scope
from fhir_dmp.policy.caller import Caller
from fhir_dmp.search.parse import parse_query
from fhir_dmp.services.lookups import resolve_patients
from fhir_dmp.storage import criteria as c
from tests.fhirclient import document, json_of, patient

INS = "urn:oid:1.2.250.1.213.1.4.10"
DOCTOR = {"actor": "professional", "sub": "810001234567", "profession": "10", "specialty": "SM26"}


def _criteria(query: str) -> c.Criterion:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&")]
    return parse_query("DocumentReference", pairs, strict=True, default_count=10, max_count=100).criteria


def test_the_chain_becomes_the_key_when_the_scope_shows_the_patient():
    criteria = _criteria(f"patient.identifier={INS}|1800175123456&status=current")
    inner = next(t.inner for t in c.conjuncts(criteria) if isinstance(t, c.PatientMatches))
    system = c.AllOf(())
    rewritten = resolve_patients(criteria, {inner: frozenset({"p1"})}, system)
    terms = c.conjuncts(rewritten)
    assert c.PatientIs("p1") in terms and not any(isinstance(t, c.PatientMatches) for t in terms)
    # no Patient found: nothing can match
    assert c.AnyOf(()) in c.conjuncts(resolve_patients(criteria, {inner: frozenset()}, system))
    # two found (the lookup stops there: maybe more): left to the chain
    assert resolve_patients(criteria, {inner: frozenset({"p1", "p2"})}, system) == criteria


def test_a_scope_that_may_hide_the_patient_keeps_the_chain_as_judge():
    criteria = _criteria(f"patient.identifier={INS}|1800175123456")
    inner = next(t.inner for t in c.conjuncts(criteria) if isinstance(t, c.PatientMatches))
    doctor = Caller(**DOCTOR)  # no standing in any DMP: the scope shows no Patient of p1
    closed = scope(doctor, None, None, None)  # type: ignore[arg-type]
    rewritten = resolve_patients(criteria, {inner: frozenset({"p1"})}, closed)
    terms = c.conjuncts(rewritten)
    assert c.PatientIs("p1") in terms and any(isinstance(t, c.PatientMatches) for t in terms)


def test_same_results_for_both_forms(client):
    ins = "1800175123456"
    pid = json_of(client.post("Patient", patient(ins)))["id"]
    other = json_of(client.post("Patient", patient("1800175123457")))["id"]
    for owner in (pid, pid, other):
        assert client.post("DocumentReference", document(owner)).status_code == 201
    for caller in (client, client.as_(**DOCTOR)):
        if caller is not client:  # the médecin, authorised by the patient, searches too
            assert client.post("Consent", consents.authorisation(pid, DOCTOR["sub"])).status_code == 201
        by_key = json_of(caller.get(f"DocumentReference?patient={pid}&status=current"))
        by_chain = json_of(caller.get(f"DocumentReference?patient.identifier={INS}|{ins}&status=current"))
        ids = sorted(e["resource"]["id"] for e in by_key.get("entry", []))
        assert ids == sorted(e["resource"]["id"] for e in by_chain.get("entry", []))
        assert by_key["total"] == by_chain["total"] == 2
    unknown = json_of(client.get(f"DocumentReference?patient.identifier={INS}|1999999999999"))
    assert unknown["total"] == 0
