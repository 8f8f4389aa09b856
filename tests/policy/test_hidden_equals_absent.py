"""Hidden equals absent (dmp-reference.md 6.8): inside a DMP the caller may open, a resource they may not see
answers every interaction exactly as a resource that does not exist.

A differential harness: for each caller kind that can be refused a resource while opening its DMP, and each
interaction on one resource (read, vread, instance history, PUT, JSON Patch, DELETE, conditional update, patch
and delete by identifier, `$validate`, `$document`, Binary raw and as a resource, `_include` reaching it, search
by `_id`), the same request is sent on the hidden resource and on a fresh uuid (or identifier), and the answers
must be alike: status, the names of the response headers (an ETag, Location or Last-Modified on one only would
tell), and the body with ids and instants normalised (an OperationOutcome's codes and diagnostics, a Bundle's
shape). A refused write writes nothing; a write both answer alike writes alike.

For a DMP the caller may not open at all (blocked, not authorised, closed, another patient's), every interaction
on any of its resources answers the same 403.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fhirclient import FhirTestClient, document, json_of, patient
from tests.policy.oracles import Answer, answer, written
from tests.policy.test_access_table import (
    IDNATPS,
    TRE_A05,
    TRE_A07,
    consent,
    created,
    fresh_ins,
    instant,
)
from tests.vsm.helpers import vsm

LOINC = "http://loinc.org"
RFC3986 = "urn:ietf:rfc:3986"
BTG = {"purpose_of_use": "BTG", "access_reason": "Patient inconscient aux urgences"}
MEDECIN_TRAITANT = "810000000102"


@dataclass(frozen=True)
class Caller:
    claims: dict
    hidden: str  # the DocumentReference of the world hidden from them
    composition: bool = False  # the world's VSM is hidden from them too ($document)


# Each caller kind that opens DMP A but may not see one of its documents, and that document.
OPENING: dict[str, Caller] = {
    # the habilitation matrix: kinés see neither biology reports nor the VSM
    "kine-habilitation": Caller({"actor": "professional", "sub": "810000000170", "profession": "70"}, "biology",
                                composition=True),
    "medecin-masked": Caller({"actor": "professional", "sub": "810000000101", "profession": "10"}, "masked"),
    "medecin-resid": Caller({"actor": "professional", "sub": "810000000101", "profession": "10"}, "resid"),
    "patient-invisible": Caller({"actor": "patient", "sub": "@A", "patient": "@A"}, "inv_patient"),
    "representative-invisible": Caller({"actor": "representative", "sub": "rep-@A", "patient": "@A"}, "inv_rl"),
    "btg-masked": Caller({"actor": "professional", "sub": "810000000108", "profession": "10", **BTG}, "masked"),
    "etreat-masked": Caller({"actor": "professional", "sub": "810000000109", "profession": "10",
                             "purpose_of_use": "ETREAT"}, "masked"),
    # an emergency kiné: the masked follow-up report they would otherwise see
    "btg-kine-masked": Caller({"actor": "professional", "sub": "810000000171", "profession": "70", **BTG}, "masked"),
}

# Callers to whom DMP A (or C, closed) is closed altogether.
REFUSED: dict[str, tuple[dict, str]] = {
    "blocked": ({"actor": "professional", "sub": "810000000106", "profession": "10"}, "A"),
    "blocked-btg": ({"actor": "professional", "sub": "810000000106", "profession": "10", **BTG}, "A"),
    "unauthorised": ({"actor": "professional", "sub": "810000000104", "profession": "10"}, "A"),
    "closed": ({"actor": "professional", "sub": "810000000101", "profession": "10"}, "C"),
    "closed-medecin-traitant": ({"actor": "professional", "sub": MEDECIN_TRAITANT, "profession": "10"}, "C"),
    "another-patient": ({"actor": "patient", "sub": "@C", "patient": "@C"}, "A"),
    "another-representative": ({"actor": "representative", "sub": "rep-@C", "patient": "@C"}, "A"),
}

# The documents of DMP A (and of C): (type, labels).
DOCS: dict[str, tuple[str, tuple[str, ...]]] = {
    "biology": ("11502-2", ()),
    "masked": ("11506-3", ("MASQUE_PS",)),
    "resid": ("ATTEST-RESID", ()),
    "inv_patient": ("11488-4", ("INVISIBLE_PATIENT",)),
    "inv_rl": ("11488-4", ("INVISIBLE_REPRESENTANTS_LEGAUX",)),
    "followup": ("11506-3", ()),  # seen by every caller of OPENING
}
TYPE_SYSTEMS = {"ATTEST-RESID": TRE_A05, "EXPPAT_3": TRE_A05}


@dataclass
class World:
    client: FhirTestClient
    ins: dict[str, str] = field(default_factory=dict)  # DMP name -> INS
    pid: dict[str, str] = field(default_factory=dict)  # DMP name -> Patient id
    docs: dict[tuple[str, str], dict] = field(default_factory=dict)  # (DMP, name) -> the stored DocumentReference
    binaries: dict[tuple[str, str], str] = field(default_factory=dict)  # (DMP, name) -> Binary id
    pointers: dict[str, str] = field(default_factory=dict)  # target id -> a visible document relating to it
    composition: str = ""
    absent: str = field(default_factory=lambda: str(uuid.uuid4()))  # the id no resource has

    def as_(self, claims: dict) -> FhirTestClient:
        filled = {k: (f"{v[:-2]}{self.ins[v[-1]]}" if isinstance(v, str) and v[-2:] in ("@A", "@C") else v)
                  for k, v in claims.items()}
        return self.client.as_(**filled)


def doc_body(pid: str, code: str, labels: tuple[str, ...] = (), **extra: Any) -> dict:
    system = TYPE_SYSTEMS.get(code, LOINC)
    body = document(pid, type={"coding": [{"system": system, "code": code}]}, date=instant(0),
                    securityLabel=[{"coding": [{"system": TRE_A07, "code": label}]} for label in labels], **extra)
    return body


def build(client: FhirTestClient) -> World:
    world = World(client)
    for name, active in (("A", True), ("C", False)):
        world.ins[name] = fresh_ins()
        gp = [{"identifier": {"system": IDNATPS, "value": MEDECIN_TRAITANT}}]
        pid = world.pid[name] = created(client.post("Patient", patient(world.ins[name], active=active,
                                                                       generalPractitioner=gp)), name)["id"]
        consents = [("permit", "810000000101"), ("permit", "810000000170")]
        if name == "A":
            consents += [("permit", "810000000106"), ("deny", "810000000106")]  # authorised, then blocked
        for kind, who in consents:
            created(client.post("Consent", consent(pid, kind, actor=who)), "a Consent")
        for doc, (code, labels) in DOCS.items():
            body = world.docs[(name, doc)] = created(client.post("DocumentReference", doc_body(pid, code, labels)),
                                                     doc)
            binary = {"resourceType": "Binary", "contentType": "text/plain",
                      "data": base64.b64encode(b"Compte rendu").decode(),
                      "securityContext": {"reference": f"DocumentReference/{body['id']}"}}
            world.binaries[(name, doc)] = created(client.post("Binary", binary), f"Binary of {doc}")["id"]
    pid = world.pid["A"]
    # A document everyone of OPENING sees, relating to each hidden document (and one to an absent id): `_include`
    for target in [d["id"] for (dmp, _), d in world.docs.items() if dmp == "A"] + [world.absent]:
        related = {"code": "appends", "target": {"reference": f"DocumentReference/{target}"}}
        world.pointers[target] = created(client.post("DocumentReference", doc_body(pid, "11506-3", relatesTo=[
            related])), "a pointer")["id"]
    saved = client.post("Composition", vsm(pid))
    world.composition = created(saved, "the VSM")["id"]
    return world


# -- interactions: (world, caller's client, DMP, document id, Binary id, identifier) -> response -----------------

Target = tuple[str, str, str]  # DocumentReference id, Binary id, identifier value


def _patch_ops() -> list[dict]:
    return [{"op": "replace", "path": "/status", "value": "entered-in-error"}]


def _update_body(world: World, dmp: str, rid: str | None, identifier: str, caller: dict) -> dict:
    code = "EXPPAT_3" if caller["actor"] in ("patient", "representative") else "11506-3"
    body = doc_body(world.pid[dmp], code, identifier=[{"system": RFC3986, "value": identifier}])
    return {**body, "id": rid} if rid else body


Interaction = Callable[[World, FhirTestClient, dict, str, Target], Any]

INTERACTIONS: dict[str, tuple[bool, Interaction]] = {
    # name: (writes, the request)
    "read": (False, lambda w, c, who, dmp, t: c.get(f"DocumentReference/{t[0]}")),
    "read-if-none-match": (False, lambda w, c, who, dmp, t: c.get(f"DocumentReference/{t[0]}",
                                                                  headers={"If-None-Match": 'W/"1"'})),
    "read-elements": (False, lambda w, c, who, dmp, t: c.get(f"DocumentReference/{t[0]}?_elements=status")),
    "vread": (False, lambda w, c, who, dmp, t: c.get(f"DocumentReference/{t[0]}/_history/1")),
    "history-instance": (False, lambda w, c, who, dmp, t: c.get(f"DocumentReference/{t[0]}/_history")),
    "validate": (False, lambda w, c, who, dmp, t: c.get(f"DocumentReference/{t[0]}/$validate")),
    "binary-raw": (False, lambda w, c, who, dmp, t: c.get(f"Binary/{t[1]}", headers={"Accept": "*/*"})),
    "binary-resource": (False, lambda w, c, who, dmp, t: c.get(f"Binary/{t[1]}")),
    "binary-vread-raw": (False, lambda w, c, who, dmp, t: c.get(f"Binary/{t[1]}/_history/1",
                                                                headers={"Accept": "*/*"})),
    "search-id": (False, lambda w, c, who, dmp, t: c.get(
        f"DocumentReference?_id={t[0]}&patient={w.pid[dmp]}&_total=accurate")),
    "search-identifier": (False, lambda w, c, who, dmp, t: c.get(
        f"DocumentReference?identifier={RFC3986}|{t[2]}&patient={w.pid[dmp]}&_total=accurate")),
    "include": (False, lambda w, c, who, dmp, t: c.get(
        f"DocumentReference?_id={w.pointers.get(t[0], w.pointers[w.absent])}&patient={w.pid[dmp]}"
        "&_include=DocumentReference:relatesto&_total=accurate")),
    "put": (True, lambda w, c, who, dmp, t: c.put(f"DocumentReference/{t[0]}", _update_body(w, dmp, t[0], t[2], who))),
    "patch": (True, lambda w, c, who, dmp, t: c.patch(f"DocumentReference/{t[0]}", _patch_ops())),
    "delete": (True, lambda w, c, who, dmp, t: c.delete(f"DocumentReference/{t[0]}")),
    "conditional-patch": (True, lambda w, c, who, dmp, t: c.patch(
        f"DocumentReference?identifier={RFC3986}|{t[2]}", _patch_ops())),
    "conditional-patch-named": (True, lambda w, c, who, dmp, t: c.patch(
        f"DocumentReference?identifier={RFC3986}|{t[2]}&patient={w.pid[dmp]}", _patch_ops())),
    "conditional-delete": (True, lambda w, c, who, dmp, t: c.delete(
        f"DocumentReference?identifier={RFC3986}|{t[2]}")),
    "conditional-delete-named": (True, lambda w, c, who, dmp, t: c.delete(
        f"DocumentReference?identifier={RFC3986}|{t[2]}&patient={w.pid[dmp]}")),
    "conditional-update-with-id": (True, lambda w, c, who, dmp, t: c.put(
        f"DocumentReference?identifier={RFC3986}|{t[2]}", _update_body(w, dmp, t[0], t[2], who))),
    # last: with no match (hidden or absent alike) it creates
    "conditional-update": (True, lambda w, c, who, dmp, t: c.put(
        f"DocumentReference?identifier={RFC3986}|{t[2]}", _update_body(w, dmp, None, t[2], who))),
    "conditional-update-named": (True, lambda w, c, who, dmp, t: c.put(
        f"DocumentReference?identifier={RFC3986}|{t[2]}&patient={w.pid[dmp]}",
        _update_body(w, dmp, None, t[2], who))),
}
# Refused whatever the caller: a write on what they do not see changes nothing.
NOTHING_WRITTEN = {"put", "patch", "delete", "conditional-patch", "conditional-patch-named", "conditional-delete",
                   "conditional-delete-named", "conditional-update-with-id"}


def identifier_of(doc: dict) -> str:
    return doc["identifier"][0]["value"]


def differences(world: World, who: dict, dmp: str, hidden: Target, absent: Target,
                names: list[str]) -> list[str]:
    """Each interaction on `hidden` and on `absent`, the answers compared."""
    client = world.as_(who)
    failures = []
    for name in names:
        writes, send = INTERACTIONS[name]
        before = written(world.client)
        on_hidden = send(world, client, who, dmp, hidden)
        between = written(world.client)
        on_absent = send(world, client, who, dmp, absent)
        after = written(world.client)
        hidden_answer = answer(on_hidden, {hidden[0]: "<target>", hidden[1]: "<binary>", hidden[2]: "<identifier>",
                                           world.pointers.get(hidden[0], ""): "<pointer>"})
        absent_answer = answer(on_absent, {absent[0]: "<target>", absent[1]: "<binary>", absent[2]: "<identifier>",
                                           world.pointers[world.absent]: "<pointer>"})
        if hidden_answer != absent_answer:
            failures.append(f"{name}: hidden {describe(hidden_answer)}\n    absent {describe(absent_answer)}")
        if between - before != after - between:
            failures.append(f"{name}: wrote {between - before} version(s) on the hidden one, {after - between} on "
                            "the absent one")
        if name in NOTHING_WRITTEN and between != before:
            failures.append(f"{name}: a refused write wrote {between - before} version(s)")
        if not writes and between != before:
            failures.append(f"{name}: a read wrote {between - before} version(s)")
    return failures


def describe(a: Answer) -> str:
    return f"{a.status} {sorted(a.headers)} {str(a.body)[:400]}"


def fresh_target(world: World) -> Target:
    """An id, a Binary id and an identifier no resource has."""
    return world.absent, str(uuid.uuid4()), f"urn:uuid:{uuid.uuid4()}"


@pytest.mark.parametrize("kind", list(OPENING))
def test_a_hidden_resource_answers_as_an_absent_one(client, kind: str) -> None:
    world = build(client)
    caller = OPENING[kind]
    doc = world.docs[("A", caller.hidden)]
    hidden = (doc["id"], world.binaries[("A", caller.hidden)], identifier_of(doc))
    # the caller does open the DMP and sees the rest of it
    probe = world.as_(caller.claims).get(f"DocumentReference/{world.docs[('A', 'followup')]['id']}")
    assert probe.status_code == 200, probe.data[:300]
    assert world.as_(caller.claims).get(f"DocumentReference/{doc['id']}").status_code == 404
    failures = differences(world, caller.claims, "A", hidden, fresh_target(world), list(INTERACTIONS))
    # nothing changed the hidden document
    stored = json_of(client.get(f"DocumentReference/{doc['id']}"))
    assert (stored["meta"]["versionId"], stored["status"]) == ("1", "current")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", ["kine-habilitation"])
def test_a_hidden_composition_answers_as_an_absent_one(client, kind: str) -> None:
    world = build(client)
    who = world.as_(OPENING[kind].claims)
    failures = []
    for suffix in ("", "/$document", "/_history", "/$validate"):
        for method in ("GET", "POST") if suffix == "/$document" else ("GET",):
            on_hidden = who.request(method, f"Composition/{world.composition}{suffix}")
            absent = str(uuid.uuid4())
            on_absent = who.request(method, f"Composition/{absent}{suffix}")
            pair = answer(on_hidden, {world.composition: "<target>"}), answer(on_absent, {absent: "<target>"})
            if pair[0] != pair[1] or pair[0].status != 404:
                failures.append(f"{method} {suffix}: {describe(pair[0])} / {describe(pair[1])}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_dmp_closed_to_the_caller_answers_403_to_everything(client, kind: str) -> None:
    """Every interaction on any resource of the DMP, or with a condition naming it, answers the one 403; a
    condition naming no DMP finds nothing there, as if absent."""
    world = build(client)
    claims, dmp = REFUSED[kind]
    who = world.as_(claims)
    on_dmp = [n for n in INTERACTIONS if not n.startswith("conditional") or n.endswith("-named")]
    failures: list[str] = []
    forbidden: set[tuple] = set()
    for doc in ("masked", "followup"):
        stored = world.docs[(dmp, doc)]
        target = (stored["id"], world.binaries[(dmp, doc)], identifier_of(stored))
        for name in on_dmp:
            before = written(client)
            got = answer(INTERACTIONS[name][1](world, who, claims, dmp, target),
                         {target[0]: "<target>", target[1]: "<binary>", target[2]: "<identifier>",
                          world.pointers.get(target[0], world.pointers[world.absent]): "<pointer>",
                          world.pid[dmp]: "<patient>"})
            if got.status != 403:
                failures.append(f"{doc} {name}: {describe(got)}")
            forbidden.add((got.status, got.headers, str(got.issue_codes())))
            if written(client) != before:
                failures.append(f"{doc} {name}: wrote something")
    if len(forbidden) > 1:
        failures.append(f"different refusals: {forbidden}")
    # a condition that names no DMP is judged where the caller may look: nothing there
    stored = world.docs[(dmp, "followup")]
    hidden = (stored["id"], world.binaries[(dmp, "followup")], identifier_of(stored))
    failures += differences(world, claims, dmp, hidden, fresh_target(world),
                            ["conditional-patch", "conditional-delete"])
    assert not failures, "\n".join(failures)


def test_the_harness_tells_a_visible_resource_from_an_absent_one(client) -> None:
    """The control: the same comparison on a document the caller sees finds the differences it must."""
    world = build(client)
    claims = OPENING["medecin-masked"].claims
    doc = world.docs[("A", "followup")]
    seen = (doc["id"], world.binaries[("A", "followup")], identifier_of(doc))
    failures = differences(world, claims, "A", seen, fresh_target(world),
                           ["read", "vread", "history-instance", "binary-raw", "search-id", "include", "put"])
    assert [f.split(":")[0] for f in failures if not f.startswith(("put: wrote", "put: a refused"))] == [
        "read", "vread", "history-instance", "binary-raw", "search-id", "include", "put"]
