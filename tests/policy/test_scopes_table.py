"""Scopes intersected with the DMP rules, as a table: every caller kind x scope x interaction.

The oracle is each half on its own: the answer the DMP rules give the same caller without a `scope` claim (the
same request, same data), and the pure scope decision (policy/scopes.py). The answer with the scope must be that
one when the scope allows the request, and a 403 naming the scope when it does not: allowed exactly when both
allow, never more (a scope that allows what the DMP rules refuse changes nothing), never less.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
import pytest

from fhir_dmp.policy.scopes import parse, refusal
from fhir_dmp.services.requests import head_of
from fhir_dmp.services.scoping import needs_of
from tests.conftest import SECRET
from tests.fhirclient import FhirTestClient, document, json_of, patient

IDNATPS = "urn:oid:1.2.250.1.71.4.2.1"
INS = "1800175123456"
TREATING = "810001234567"
CALLERS = {
    "system": {"actor": "system", "sub": "scope-table"},
    "treating": {"actor": "professional", "sub": TREATING, "profession": "10", "specialty": "SM26"},
    "stranger": {"actor": "professional", "sub": "810009999999", "profession": "10"},
    "patient": {"actor": "patient", "sub": INS, "patient": INS},
    "representative": {"actor": "representative", "sub": "rep-0042", "patient": INS},
}
SCOPES = ["", "openid launch/patient", "user/*.cruds", "user/*.rs", "user/DocumentReference.rs",
          "user/DocumentReference.cruds user/Patient.r", "patient/*.rs", "patient/*.cruds",
          "patient/DocumentReference.read", "patient/Patient.read", "system/*.read", "system/*.cruds",
          "user/*.rs?category=10", "user/Binary.r"]


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str  # {p}: the DMP's Patient id, {d}: its document's id
    body: str = ""  # "document": a new DocumentReference in the DMP


CALLS = [
    Call("read document", "GET", "DocumentReference/{d}"),
    Call("history of a document", "GET", "DocumentReference/{d}/_history"),
    Call("search documents", "GET", "DocumentReference?patient={p}"),
    Call("search with _include", "GET", "DocumentReference?patient={p}&_include=DocumentReference:subject"),
    Call("search by INS (a chain into Patient)", "GET", f"DocumentReference?patient.identifier={INS}"),
    Call("reverse chain", "GET", "Patient?_has:DocumentReference:patient:type=11488-4"),
    Call("read the DMP", "GET", "Patient/{p}"),
    Call("existence check", "GET", f"Patient?identifier={INS}"),
    Call("everything", "GET", "Patient/{p}/$everything"),
    Call("create a document", "POST", "DocumentReference", "document"),
]


def token(claims: dict, scope: str | None) -> str:
    now = int(time.time())
    body = {**claims, "iat": now, "exp": now + 600, **({"scope": scope} if scope is not None else {})}
    return jwt.encode(body, SECRET, algorithm="HS256")


def send(client: FhirTestClient, call: Call, ids: dict, claims: dict, scope: str | None):  # type: ignore[no-untyped-def]
    path = call.path.format(**ids)
    body = document(ids["p"]) if call.body == "document" else None
    return client.request(call.method, path, body, auth=False,
                          headers={"Authorization": f"Bearer {token(claims, scope)}"})


@pytest.mark.parametrize("kind", sorted(CALLERS))
def test_the_answer_is_the_intersection_of_the_scope_and_the_dmp_rules(client: FhirTestClient, kind: str) -> None:
    gp = [{"identifier": {"system": IDNATPS, "value": TREATING}}]
    pid = json_of(client.post("Patient", patient(INS, generalPractitioner=gp)))["id"]
    did = json_of(client.post("DocumentReference", document(pid)))["id"]
    ids, claims = {"p": pid, "d": did}, CALLERS[kind]
    for call in CALLS:
        baseline = send(client, call, ids, claims, None).status_code
        head = head_of(call.method, call.path.format(**ids), "http://localhost/fhir")
        for scope in SCOPES:
            answer = send(client, call, ids, claims, scope)
            decided = refusal(parse(scope), claims["actor"], needs_of(head))
            where = f"{kind} / {call.name} / scope {scope!r} (without scope: {baseline})"
            if decided is None:
                assert answer.status_code == baseline, where
            else:
                assert answer.status_code == 403, where
                assert decided.issues[0].diagnostics == json_of(answer)["issue"][0]["diagnostics"], where
            allowed = answer.status_code < 400
            assert allowed == (baseline < 400 and decided is None), where  # the intersection, never more


def test_the_table_covers_both_halves(client: FhirTestClient) -> None:
    """The table is not vacuous: some cells are allowed by both, some refused by each half alone."""
    needs = needs_of(head_of("GET", "DocumentReference?patient=1", "http://localhost/fhir"))
    assert refusal(parse("user/*.rs"), "professional", needs) is None
    assert refusal(parse("patient/*.rs"), "professional", needs) is not None
    assert refusal(parse("system/*.cruds"), "patient", needs) is not None
    stranger = token(CALLERS["stranger"], "user/*.cruds")
    pid = json_of(client.post("Patient", patient(INS)))["id"]
    answer = client.request("GET", f"DocumentReference?patient={pid}", auth=False,
                            headers={"Authorization": f"Bearer {stranger}"})
    assert answer.status_code == 403  # the widest scope does not authorise a professional the patient did not
