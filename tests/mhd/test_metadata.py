"""Metadata updates and logical deletion (ANS PDSm flux 03, pdsm4dmp TD3.3a-d; dmp-reference.md 5 and 6;
policy/documents.py): every actor against every rule, through the HTTP API, with nothing written by a refusal."""

from __future__ import annotations

import pytest

from fhir_dmp.policy.consents import IDNATPS, authorisation
from tests.fhirclient import FhirTestClient, document, json_of, patient, written
from tests.mhd.helpers import IS_ARCHIVED, TRE_A07, new_ins

DEPOSITOR, OTHER, TREATING, URGENTISTE = "810000000201", "810000000202", "810000000203", "810000000204"
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACTORS = ("system", "patient", "representative", "depositor", "other", "treating", "emergency")


def _label(code: str, system: str = TRE_A07) -> dict:
    return {"coding": [{"system": system, "code": code}]}


class World:
    """A DMP (médecin traitant TREATING, OTHER authorised), a document DEPOSITOR filed, and a client per actor."""

    def __init__(self, client: FhirTestClient, **doc: object) -> None:
        ins = new_ins()
        body = patient(ins, generalPractitioner=[{"identifier": {"system": IDNATPS, "value": TREATING}}])
        self.pid = json_of(client.post("Patient", body))["id"]
        for ps in (DEPOSITOR, OTHER):
            assert client.post("Consent", authorisation(self.pid, ps)).status_code == 201
        pro = {"actor": "professional", "profession": "10", "specialty": "SM26"}
        self.clients = {
            "system": client,
            "patient": client.as_(actor="patient", sub=ins, patient=ins),
            "representative": client.as_(actor="representative", sub=f"rep-{ins}", patient=ins),
            "depositor": client.as_(**pro, sub=DEPOSITOR),
            "other": client.as_(**pro, sub=OTHER),
            "treating": client.as_(**pro, sub=TREATING),
            "emergency": client.as_(**pro, sub=URGENTISTE, purpose_of_use="BTG", access_reason="arrêt cardiaque"),
        }
        created = self.clients["depositor"].post("DocumentReference", document(self.pid, **doc))
        assert created.status_code == 201, created.data
        self.doc = json_of(created)


MASKED = {"securityLabel": [_label("N", V3), _label("MASQUE_PS")]}
HIDDEN = {"securityLabel": [_label("N", V3), _label("INVISIBLE_PATIENT")]}
ARCHIVED = {"extension": [{"url": IS_ARCHIVED, "valueBoolean": True}]}
SUPERSEDED = {"status": "superseded"}

# rule: (document created with, JSON Patch, the status each actor gets)
RULES: dict[str, tuple[dict, list[dict], dict[str, int]]] = {
    "mask": ({}, [{"op": "add", "path": "/securityLabel/-", "value": _label("MASQUE_PS")}],
             {"system": 200, "patient": 200, "representative": 200, "depositor": 403, "other": 403, "treating": 403,
              "emergency": 403}),
    "unmask": (MASKED, [{"op": "remove", "path": "/securityLabel/1"}],
               # a masked document: the emergency caller (no grant) does not see it at all
               {"system": 200, "patient": 200, "representative": 200, "depositor": 403, "other": 404,
                "treating": 403, "emergency": 404}),
    "reveal to the patient": (HIDDEN, [{"op": "remove", "path": "/securityLabel/1"}],
                              # the patient and representative do not see it yet: absent for them
                              {"system": 200, "patient": 404, "representative": 404, "depositor": 200, "other": 403,
                               "treating": 403, "emergency": 403}),
    "hide from the patient": ({}, [{"op": "add", "path": "/securityLabel/-", "value": _label("INVISIBLE_PATIENT")}],
                              {"system": 200, "patient": 403, "representative": 403, "depositor": 200, "other": 403,
                               "treating": 403, "emergency": 403}),
    "confidentiality": ({}, [{"op": "replace", "path": "/securityLabel/0", "value": _label("R", V3)}],
                        {"system": 200, "patient": 403, "representative": 403, "depositor": 200, "other": 403,
                         "treating": 403, "emergency": 403}),
    "delete": ({}, [{"op": "replace", "path": "/status", "value": "entered-in-error"}],
               {"system": 200, "patient": 200, "representative": 200, "depositor": 200, "other": 403,
                "treating": 403, "emergency": 403}),
    "supersede by hand": ({}, [{"op": "replace", "path": "/status", "value": "superseded"}],
                          {"system": 200, "patient": 403, "representative": 403, "depositor": 200, "other": 403,
                           "treating": 403, "emergency": 403}),
    "revive a replaced document": (SUPERSEDED, [{"op": "replace", "path": "/status", "value": "current"}],
                                   {"system": 200, "patient": 422, "representative": 422, "depositor": 422,
                                    "other": 403, "treating": 403, "emergency": 403}),
    "archive (PDSm path)": ({}, [{"op": "replace", "path": f"/extension[url:'{IS_ARCHIVED}']/valueBoolean",
                                  "value": True}],
                            {"system": 200, "patient": 200, "representative": 200, "depositor": 200, "other": 403,
                             "treating": 403, "emergency": 403}),
    "unarchive": (ARCHIVED, [{"op": "replace", "path": "/extension/0/valueBoolean", "value": False}],
                  {"system": 200, "patient": 200, "representative": 200, "depositor": 200, "other": 403,
                   "treating": 403, "emergency": 403}),
    "change the title": ({}, [{"op": "replace", "path": "/content/0/attachment/title", "value": "Autre"}],
                         dict.fromkeys(ACTORS, 422)),
    "change the type": ({}, [{"op": "replace", "path": "/type/coding/0/code", "value": "34112-3"}],
                        dict.fromkeys(ACTORS, 422)),
    "add meta.security": ({}, [{"op": "add", "path": "/meta/security", "value": [
        {"system": TRE_A07, "code": "MASQUE_PS"}]}], dict.fromkeys(ACTORS, 422)),
}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("rule", list(RULES))
def test_each_actor_against_each_metadata_rule(client, rule, actor):
    created_with, ops, expected = RULES[rule]
    world = World(client, **created_with)
    before = written(client)
    path = f"DocumentReference/{world.doc['id']}"
    response = world.clients[actor].patch(path, ops)
    assert response.status_code == expected[actor], response.data
    current = json_of(client.get(path))
    if expected[actor] == 200:
        assert current["meta"]["versionId"] == "2"
        assert written(client) == before + 1
        changed = {k for k in set(current) | set(world.doc)
                   if k != "meta" and current.get(k) != world.doc.get(k)}
        assert changed <= {"status", "securityLabel", "extension"}, changed
    else:
        assert json_of(response)["resourceType"] == "OperationOutcome"
        assert current == world.doc  # nothing changed
        assert written(client) == before


def test_a_forbidden_field_is_named_and_nothing_is_changed_even_beside_allowed_ones(client):
    world = World(client)
    path = f"DocumentReference/{world.doc['id']}"
    response = world.clients["depositor"].patch(path, [
        {"op": "replace", "path": "/status", "value": "entered-in-error"},
        {"op": "add", "path": "/description", "value": "corrigé"},
        {"op": "remove", "path": "/context"}])
    assert response.status_code == 422
    issues = json_of(response)["issue"]
    assert [i["expression"] for i in issues] == [["DocumentReference.context"], ["DocumentReference.description"]]
    assert json_of(client.get(path)) == world.doc


def test_conditional_patch_on_the_identifier_deletes_logically(client):
    world = World(client)
    ident = world.doc["identifier"][0]
    response = world.clients["patient"].patch(
        f"DocumentReference?identifier={ident['system']}|{ident['value']}",
        [{"op": "replace", "path": "/status", "value": "entered-in-error"}])
    assert response.status_code == 200, response.data
    assert response.headers["ETag"] == 'W/"2"'
    assert json_of(response)["status"] == "entered-in-error"
    # still there, with its history: found by status, not among current documents
    def search(query: str) -> int:
        return json_of(client.get(f"DocumentReference?patient={world.pid}&{query}"))["total"]

    assert search("status=entered-in-error") == 1 and search("status=current") == 0
    assert json_of(client.get(f"DocumentReference/{world.doc['id']}/_history"))["total"] == 2
    # a deleted document is final
    again = world.clients["depositor"].patch(f"DocumentReference/{world.doc['id']}",
                                             [{"op": "replace", "path": "/status", "value": "current"}])
    assert again.status_code == 422


def test_conditional_patch_of_a_document_the_caller_may_not_see_is_404(client):
    world = World(client, **MASKED)
    ident = world.doc["identifier"][0]
    response = world.clients["other"].patch(f"DocumentReference?identifier={ident['system']}|{ident['value']}",
                                            [{"op": "replace", "path": "/status", "value": "entered-in-error"}])
    assert response.status_code == 404
    assert json_of(client.get(f"DocumentReference/{world.doc['id']}"))["status"] == "current"


@pytest.mark.parametrize(("actor", "status"), [("depositor", 200), ("patient", 200), ("other", 403),
                                               ("treating", 403), ("system", 200)])
def test_put_obeys_the_same_rules(client, actor, status):
    world = World(client)
    path = f"DocumentReference/{world.doc['id']}"
    response = world.clients[actor].put(path, {**world.doc, "status": "entered-in-error"})
    assert response.status_code == status, response.data
    assert json_of(client.get(path))["status"] == ("entered-in-error" if status == 200 else "current")


def test_a_patient_rewrites_nothing_but_the_metadata_of_a_document_they_did_not_file(client):
    world = World(client)
    path = f"DocumentReference/{world.doc['id']}"
    response = world.clients["patient"].put(path, {**world.doc, "description": "mon commentaire"})
    assert response.status_code == 403
    assert json_of(client.get(path)) == world.doc


def test_http_delete_is_the_depositors_or_the_patients(client):
    """DELETE stays the R4 interaction (410 afterwards, every version kept): the same people as the logical
    deletion may use it."""
    for actor, status in (("other", 403), ("treating", 403), ("emergency", 403), ("depositor", 204)):
        world = World(client)
        path = f"DocumentReference/{world.doc['id']}"
        assert world.clients[actor].delete(path).status_code == status
        assert client.get(path).status_code == (410 if status == 204 else 200)
