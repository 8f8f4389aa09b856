"""Batch and transaction Bundles (`POST /fhir`), per http://hl7.org/fhir/R4/http.html#transaction.

Every test runs on SQLite and, when FHIR_DMP_TEST_POSTGRES_URL is set, on PostgreSQL too.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest

from fhir_dmp.storage import resources as repo
from tests.fhirclient import document, json_of, linked, patient, written

BASE = "http://localhost/fhir"
INS = "urn:oid:1.2.250.1.213.1.4.10"


# -- helpers ----------------------------------------------------------------------------------------
def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def bundle(entries: list[dict], kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post(resource: dict, full_url: str | None = None, **request: Any) -> dict:
    entry: dict = {"resource": resource,
                   "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict, url: str | None = None, **request: Any) -> dict:
    url = url or f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def get(url: str) -> dict:
    return {"request": {"method": "GET", "url": url}}


def delete(url: str, **request: Any) -> dict:
    return {"request": {"method": "DELETE", "url": url, **request}}


def patch(url: str, ops: list[dict], content_type: str = "application/json-patch+json") -> dict:
    binary = {"resourceType": "Binary", "contentType": content_type,
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    return {"resource": binary, "request": {"method": "PATCH", "url": url}}


def send(client, entries: list[dict], kind: str = "transaction", **kw: Any):  # type: ignore[no-untyped-def]
    return client.post("/fhir", bundle(entries, kind), **kw)


def create(client, resource: dict) -> dict:  # type: ignore[no-untyped-def]
    response = client.post(resource["resourceType"], resource)
    assert response.status_code == 201, response.data
    return json_of(response)


def search(client, query: str) -> dict:  # type: ignore[no-untyped-def]
    response = client.get(query)
    assert response.status_code == 200, response.data
    return json_of(response)


def total(client, query: str) -> int:  # type: ignore[no-untyped-def]
    return search(client, query)["total"]


def history_total(client, path: str = "_history") -> int:  # type: ignore[no-untyped-def]
    return total(client, path)


def ins(value: str) -> str:
    return f"identifier={INS}|{value}"


def unique_ins() -> str:
    return str(uuid.uuid4().int)[:13]


def id_of(reference: str, rtype: str) -> str:
    assert reference.startswith(f"{rtype}/"), reference
    return reference.split("/")[1]


def issues_of(response) -> list[dict]:  # type: ignore[no-untyped-def]
    body = json_of(response)
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"]


def names_entry(response, index: int) -> bool:  # type: ignore[no-untyped-def]
    """The error OperationOutcome locates the failing entry (diagnostics or expression)."""
    where = f"Bundle.entry[{index}]"
    return any(where in issue.get("diagnostics", "")
               or any(e.startswith(where) for e in issue.get("expression", []))
               for issue in issues_of(response))


def snapshot(client) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """Counts that any write would change: system history, current Patients, current DocumentReferences."""
    return written(client), total(client, "Patient"), total(client, "DocumentReference")


# -- urn:uuid replacement -----------------------------------------------------------------------------
def test_urn_uuids_are_replaced_in_references_and_in_other_string_elements(client, database):
    p_url, doc_url, bin_url = urn(), urn(), urn()
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "Q29tcHRlIHJlbmR1",
              "securityContext": {"reference": doc_url}}
    doc = document("placeholder", subject={"reference": p_url},
                   content=[{"attachment": linked(b"Compte rendu", bin_url)}],
                   description="not a urn: " + p_url)
    # the Binary comes before the DocumentReference its securityContext names
    response = send(client, [post(patient(unique_ins()), p_url), post(binary, bin_url), post(doc, doc_url)])
    assert response.status_code == 200, response.data
    body = json_of(response)
    assert body["type"] == "transaction-response"
    pat, binary_out, doc_out = (e["resource"] for e in body["entry"])
    assert [e["response"]["status"][:3] for e in body["entry"]] == ["201", "201", "201"]

    assert doc_out["subject"]["reference"] == f"Patient/{pat['id']}"
    assert doc_out["content"][0]["attachment"]["url"] == f"Binary/{binary_out['id']}"
    assert binary_out["securityContext"]["reference"] == f"DocumentReference/{doc_out['id']}"
    # a string that merely contains a fullUrl is left alone: only whole values are URLs
    assert doc_out["description"] == "not a urn: " + p_url

    # what was stored is what was answered
    stored_doc = json_of(client.get(f"DocumentReference/{doc_out['id']}"))
    assert stored_doc["content"][0]["attachment"]["url"] == f"Binary/{binary_out['id']}"
    assert stored_doc["subject"]["reference"] == f"Patient/{pat['id']}"
    stored_bin = json_of(client.get(f"Binary/{binary_out['id']}"))
    assert stored_bin["securityContext"]["reference"] == f"DocumentReference/{doc_out['id']}"

    # the Binary belongs to the DMP of its DocumentReference, though it was listed before it
    with database.transaction() as conn:
        assert repo.read_current(conn, "DocumentReference", doc_out["id"]).patient_key == pat["id"]
        assert repo.read_current(conn, "Binary", binary_out["id"]).patient_key == pat["id"]
    found = search(client, f"DocumentReference?patient={pat['id']}")
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [doc_out["id"]]


def test_urn_uuid_in_an_update_body_is_replaced_by_the_new_id(client):
    existing = create(client, document(create(client, patient(unique_ins()))["id"]))
    p_url = urn()
    changed = {**existing, "subject": {"reference": p_url}}
    changed.pop("meta")
    response = send(client, [put(changed), post(patient(unique_ins()), p_url)])
    assert response.status_code == 200, response.data
    new_patient = json_of(response)["entry"][1]["resource"]
    updated = json_of(client.get(f"DocumentReference/{existing['id']}"))
    assert updated["subject"]["reference"] == f"Patient/{new_patient['id']}"
    assert updated["meta"]["versionId"] == "2"
    assert total(client, f"DocumentReference?patient={new_patient['id']}") == 1


# -- conditional references ------------------------------------------------------------------------
def test_conditional_reference_is_resolved_to_the_one_match(client):
    value = unique_ins()
    pid = create(client, patient(value))["id"]
    create(client, patient(unique_ins()))  # another DMP that must not match
    doc = document("x", subject={"reference": f"Patient?{ins(value)}"})
    response = send(client, [post(doc)])
    assert response.status_code == 200, response.data
    created = json_of(response)["entry"][0]["resource"]
    assert created["subject"]["reference"] == f"Patient/{pid}"
    stored = json_of(client.get(f"DocumentReference/{created['id']}"))
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    assert total(client, f"DocumentReference?patient={pid}") == 1


def test_conditional_reference_matching_nothing_is_412_and_nothing_is_written(client):
    before = snapshot(client)
    entries = [post(patient(unique_ins())),
               post(document("x", subject={"reference": f"Patient?{ins('1999999999999')}"}))]
    response = send(client, entries)
    assert response.status_code == 412, response.data
    assert names_entry(response, 1)
    assert snapshot(client) == before


def test_conditional_reference_matching_several_is_412(client):
    family = f"TWIN{unique_ins()}"  # one DMP per INS: several matches come from another criterion
    create(client, patient(unique_ins(), name=[{"family": family, "given": ["Claire"]}]))
    create(client, patient(unique_ins(), name=[{"family": family, "given": ["Claire"]}]))
    before = snapshot(client)
    response = send(client, [post(document("x", subject={"reference": f"Patient?family={family}"}))])
    assert response.status_code == 412, response.data
    assert names_entry(response, 0)
    assert snapshot(client) == before


@pytest.mark.parametrize("reference", ["Patient?unknownparam=1", "Patient?identifier=a&frobnicate=b",
                                       "NotAType?identifier=a"])
def test_conditional_reference_with_an_unknown_parameter_or_type_is_400(client, reference):
    create(client, patient(unique_ins()))
    before = snapshot(client)
    entries = [post(patient(unique_ins())), post(document("x", subject={"reference": reference}))]
    response = send(client, entries)
    assert response.status_code == 400, response.data
    assert names_entry(response, 1)
    assert snapshot(client) == before


# -- ifNoneExist -----------------------------------------------------------------------------------
def test_if_none_exist_reuses_the_existing_resource_and_maps_its_full_url(client):
    value = unique_ins()
    existing = create(client, patient(value))
    p_url = urn()
    entries = [post(patient(value), p_url, ifNoneExist=ins(value)),
               post(document("x", subject={"reference": p_url}))]
    response = send(client, entries)
    assert response.status_code == 200, response.data
    first, second = json_of(response)["entry"]
    assert first["response"]["status"].startswith("200")
    assert first["response"]["location"].startswith(f"{BASE}/Patient/{existing['id']}")
    assert first["resource"]["id"] == existing["id"]
    assert second["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert total(client, f"Patient?{ins(value)}") == 1
    # the existing Patient was not touched
    assert json_of(client.get(f"Patient/{existing['id']}"))["meta"]["versionId"] == "1"
    assert history_total(client, f"Patient/{existing['id']}/_history") == 1


def test_if_none_exist_creates_when_nothing_matches(client):
    value = unique_ins()
    p_url = urn()
    response = send(client, [post(patient(value), p_url, ifNoneExist=ins(value)),
                             post(document("x", subject={"reference": p_url}))])
    assert response.status_code == 200, response.data
    first, second = json_of(response)["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["resource"]["subject"]["reference"] == f"Patient/{first['resource']['id']}"
    assert total(client, f"Patient?{ins(value)}") == 1


def test_if_none_exist_matching_several_is_412(client):
    family = f"TWIN{unique_ins()}"  # one DMP per INS: several matches come from another criterion
    create(client, patient(unique_ins(), name=[{"family": family, "given": ["Claire"]}]))
    create(client, patient(unique_ins(), name=[{"family": family, "given": ["Claire"]}]))
    before = snapshot(client)
    entries = [post(patient(unique_ins())), post(patient(unique_ins()), urn(), ifNoneExist=f"family={family}")]
    response = send(client, entries)
    assert response.status_code == 412, response.data
    assert names_entry(response, 1)
    assert snapshot(client) == before


def test_if_none_exist_with_an_unknown_parameter_is_400_naming_the_entry(client):
    before = snapshot(client)
    entries = [post(patient(unique_ins())), post(patient(unique_ins()), urn(), ifNoneExist="bogus=1")]
    response = send(client, entries)
    assert response.status_code == 400, response.data
    assert names_entry(response, 1)
    assert snapshot(client) == before


# -- processing order --------------------------------------------------------------------------------
def test_entries_run_delete_post_put_get_and_answer_in_request_order(client):
    new_value = unique_ins()
    a = create(client, patient(unique_ins()))
    b = create(client, patient(unique_ins()))
    a_changed = {k: v for k, v in a.items() if k != "meta"} | {"gender": "male"}
    entries = [
        get(f"Patient?{ins(new_value)}"),     # GET runs last: sees the POST
        get(f"Patient/{a['id']}"),            # ... and the PUT
        put(a_changed),                       # PUT after POST and DELETE
        post(patient(new_value), urn()),      # POST after DELETE
        delete(f"Patient/{b['id']}"),         # DELETE first
        get(f"Patient?_id={b['id']}"),        # ... so the search no longer finds it
    ]
    response = send(client, entries)
    assert response.status_code == 200, response.data
    body = json_of(response)
    assert body["type"] == "transaction-response"
    out = body["entry"]
    assert len(out) == len(entries)
    statuses = [e["response"]["status"][:3] for e in out]
    assert statuses == ["200", "200", "200", "201", "204", "200"]
    searched = out[0]["resource"]
    assert searched["resourceType"] == "Bundle" and searched["type"] == "searchset"
    assert [e["resource"]["id"] for e in searched.get("entry", [])] == [out[3]["resource"]["id"]]
    assert out[1]["resource"]["gender"] == "male" and out[1]["resource"]["meta"]["versionId"] == "2"
    assert out[2]["resource"]["meta"]["versionId"] == "2"
    assert out[5]["resource"].get("total", len(out[5]["resource"].get("entry", []))) == 0
    assert client.get(f"Patient/{b['id']}").status_code == 410


def test_delete_runs_before_a_conditional_create_of_the_same_transaction(client):
    """R4: DELETEs first, then POSTs; the POST's ifNoneExist must not find what the DELETE removed."""
    value = unique_ins()
    old = create(client, patient(value))
    entries = [post(patient(value), urn(), ifNoneExist=ins(value)), delete(f"Patient/{old['id']}")]
    response = send(client, entries)
    assert response.status_code == 200, response.data
    created, deleted = json_of(response)["entry"]
    assert deleted["response"]["status"].startswith("204")
    assert created["response"]["status"].startswith("201")
    assert created["resource"]["id"] != old["id"]
    assert client.get(f"Patient/{old['id']}").status_code == 410
    found = search(client, f"Patient?{ins(value)}")
    assert [e["resource"]["id"] for e in found["entry"]] == [created["resource"]["id"]]


# -- response bundle ---------------------------------------------------------------------------------
def test_response_entries_carry_status_location_etag_and_last_modified(client):
    a = create(client, patient(unique_ins()))
    a_changed = {k: v for k, v in a.items() if k != "meta"} | {"gender": "other"}
    response = send(client, [post(patient(unique_ins()), urn()), put(a_changed), get(f"Patient/{a['id']}")])
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body = json_of(response)
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", body["timestamp"])
    created, updated, read = body["entry"]
    cid = created["resource"]["id"]
    assert created["response"] == {
        "status": "201 Created", "location": f"{BASE}/Patient/{cid}/_history/1", "etag": 'W/"1"',
        "lastModified": created["resource"]["meta"]["lastUpdated"]}
    assert updated["response"]["status"].startswith("200")
    assert updated["response"]["location"] == f"{BASE}/Patient/{a['id']}/_history/2"
    assert updated["response"]["etag"] == 'W/"2"'
    assert updated["response"]["lastModified"] == updated["resource"]["meta"]["lastUpdated"]
    assert read["response"]["status"].startswith("200") and read["response"]["etag"] == 'W/"2"'
    assert read["resource"]["gender"] == "other"
    # the answer matches the store
    assert client.get(f"Patient/{cid}").headers["ETag"] == 'W/"1"'


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_prefer_minimal_leaves_written_resources_out_and_reads_in(client, kind):
    """`Prefer: return=minimal` holds for each write entry as for a single write; a read entry still answers
    what it read."""
    a = create(client, patient(unique_ins()))
    a_changed = {k: v for k, v in a.items() if k != "meta"} | {"gender": "other"}
    response = send(client, [post(patient(unique_ins()), urn()), put(a_changed), get(f"Patient/{a['id']}")], kind,
                    headers={"Prefer": "return=minimal"})
    assert response.status_code == 200, response.data
    created, updated, read = json_of(response)["entry"]
    assert set(created) == set(updated) == {"response"}
    assert created["response"]["status"] == "201 Created" and updated["response"]["etag"] == 'W/"2"'
    assert updated["response"]["lastModified"] == json_of(client.get(f"Patient/{a['id']}"))["meta"]["lastUpdated"]
    assert read["resource"]["gender"] == "other"


def test_an_empty_transaction_answers_an_empty_transaction_response(client):
    # R4 JSON has no empty arrays: an empty transaction has no `entry` at all
    response = client.post("/fhir", {"resourceType": "Bundle", "type": "transaction"})
    assert response.status_code == 200, response.data
    body = json_of(response)
    assert body["type"] == "transaction-response"
    assert body.get("entry", []) == []


# -- all or nothing ----------------------------------------------------------------------------------
def _prepared(client) -> tuple[dict, list[dict], str]:  # type: ignore[no-untyped-def]
    """An existing Patient, and good entries that create one Patient and a document, and update it."""
    a = create(client, patient(unique_ins()))
    value = unique_ins()
    p_url = urn()
    good = [post(patient(value), p_url), post(document("x", subject={"reference": p_url})),
            put({k: v for k, v in a.items() if k != "meta"} | {"gender": "male"})]
    return a, good, value


def _nothing_written(client, a: dict, value: str, before: tuple) -> None:  # type: ignore[no-untyped-def]
    assert snapshot(client) == before
    assert total(client, f"Patient?{ins(value)}") == 0
    assert history_total(client, f"Patient/{a['id']}/_history") == 1
    current = json_of(client.get(f"Patient/{a['id']}"))
    assert current["meta"]["versionId"] == "1" and current["gender"] == "female"


def test_transaction_with_a_structurally_invalid_last_entry_writes_nothing(client):
    a, good, value = _prepared(client)
    before = snapshot(client)
    response = send(client, [*good, post(patient(unique_ins(), gender="woman"))])
    assert response.status_code == 422, response.data
    assert names_entry(response, 3)
    _nothing_written(client, a, value, before)


def test_transaction_with_a_dangling_patient_reference_in_the_last_entry_writes_nothing(client):
    a, good, value = _prepared(client)
    before = snapshot(client)
    response = send(client, [*good, post(document("does-not-exist"))])
    assert response.status_code == 422, response.data
    assert names_entry(response, 3)
    _nothing_written(client, a, value, before)


def test_transaction_with_a_failing_if_match_in_the_last_entry_writes_nothing(client):
    a, good, value = _prepared(client)
    b = create(client, patient(unique_ins()))
    before = snapshot(client)
    b_changed = {k: v for k, v in b.items() if k != "meta"} | {"gender": "male"}
    response = send(client, [*good, put(b_changed, ifMatch='W/"7"')])
    assert response.status_code == 412, response.data
    assert names_entry(response, 3)
    _nothing_written(client, a, value, before)
    assert json_of(client.get(f"Patient/{b['id']}"))["meta"]["versionId"] == "1"


def test_transaction_with_a_matching_if_match_succeeds(client):
    b = create(client, patient(unique_ins()))
    b_changed = {k: v for k, v in b.items() if k != "meta"} | {"gender": "male"}
    response = send(client, [put(b_changed, ifMatch='W/"1"')])
    assert response.status_code == 200, response.data
    assert json_of(client.get(f"Patient/{b['id']}"))["gender"] == "male"


def test_transaction_with_a_failing_read_writes_nothing(client):
    a, good, value = _prepared(client)
    before = snapshot(client)
    response = send(client, [*good, get(f"Patient/{uuid.uuid4()}")])
    assert response.status_code == 404, response.data
    _nothing_written(client, a, value, before)


def test_transaction_entry_without_a_request_url_is_400_naming_it(client):
    a, good, value = _prepared(client)
    before = snapshot(client)
    bad = {"resource": patient(unique_ins()), "request": {"method": "POST"}}
    response = send(client, [*good, bad])
    assert response.status_code == 400, response.data
    assert names_entry(response, 3)
    _nothing_written(client, a, value, before)


def test_transaction_reports_all_structural_issues_in_one_outcome(client):
    before = snapshot(client)
    entries = [post(patient(unique_ins())),
               post(patient(unique_ins(), gender="woman", birthDate="17/01/1980")),
               post({"resourceType": "Patient", "active": "yes", "unknownElement": 1})]
    response = send(client, entries)
    assert response.status_code == 422, response.data
    issues = issues_of(response)
    expressions = {e for issue in issues for e in issue.get("expression", [])}
    assert all(issue["severity"] in ("error", "fatal") for issue in issues)
    assert {"Bundle.entry[1].resource.gender", "Bundle.entry[1].resource.birthDate",
            "Bundle.entry[2].resource.active", "Bundle.entry[2].resource.unknownElement"} <= expressions
    assert not any(e.startswith("Bundle.entry[0]") for e in expressions)
    assert snapshot(client) == before


# -- the same resource twice -------------------------------------------------------------------------
@pytest.mark.parametrize("second", ["put", "patch", "delete"])
def test_changing_the_same_resource_twice_is_400(client, second):
    a = create(client, patient(unique_ins()))
    before = snapshot(client)
    body = {k: v for k, v in a.items() if k != "meta"} | {"gender": "male"}
    other = {"put": put(body | {"gender": "other"}),
             "patch": patch(f"Patient/{a['id']}", [{"op": "replace", "path": "/gender", "value": "other"}]),
             "delete": delete(f"Patient/{a['id']}")}[second]
    response = send(client, [put(body), other])
    assert response.status_code == 400, response.data
    assert snapshot(client) == before
    assert json_of(client.get(f"Patient/{a['id']}"))["meta"]["versionId"] == "1"


def test_a_conditional_update_resolving_to_a_resource_changed_elsewhere_is_400(client):
    """R4: identities resolved from conditional updates count when checking for overlaps."""
    value = unique_ins()
    a = create(client, patient(value))
    before = snapshot(client)
    body = {k: v for k, v in a.items() if k != "meta"}
    response = send(client, [put(body | {"gender": "male"}),
                             put({k: v for k, v in body.items() if k != "id"} | {"gender": "other"},
                                 f"Patient?{ins(value)}")])
    assert response.status_code == 400, response.data
    assert snapshot(client) == before
    assert json_of(client.get(f"Patient/{a['id']}"))["meta"]["versionId"] == "1"


# -- PATCH in a Bundle ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_patch_entries_carried_as_binary_are_applied(client, kind):
    a = create(client, patient(unique_ins()))
    ops = [{"op": "test", "path": "/gender", "value": "female"},
           {"op": "replace", "path": "/gender", "value": "male"},
           {"op": "add", "path": "/name/0/given/-", "value": "Marie"}]
    response = send(client, [patch(f"Patient/{a['id']}", ops)], kind)
    assert response.status_code == 200, response.data
    entry = json_of(response)["entry"][0]
    assert entry["response"]["status"].startswith("200"), entry
    assert entry["response"]["etag"] == 'W/"2"'
    current = json_of(client.get(f"Patient/{a['id']}"))
    assert current["gender"] == "male" and current["name"][0]["given"] == ["Claire", "Marie"]
    assert current["meta"]["versionId"] == "2"


def test_patch_entry_whose_test_fails_rolls_the_transaction_back(client):
    a = create(client, patient(unique_ins()))
    before = snapshot(client)
    ops = [{"op": "test", "path": "/gender", "value": "male"},
           {"op": "replace", "path": "/gender", "value": "other"}]
    response = send(client, [post(patient(unique_ins())), patch(f"Patient/{a['id']}", ops)])
    assert response.status_code == 422, response.data
    assert names_entry(response, 1)
    assert snapshot(client) == before


def test_patch_entry_with_a_binary_that_is_not_json_patch_is_refused(client):
    a = create(client, patient(unique_ins()))
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    response = send(client, [patch(f"Patient/{a['id']}", ops, content_type="text/plain")])
    assert response.status_code == 415, response.data
    assert json_of(client.get(f"Patient/{a['id']}"))["gender"] == "female"


# -- batch ---------------------------------------------------------------------------------------------
def test_batch_entries_are_independent(client):
    a = create(client, patient(unique_ins()))
    good_value = unique_ins()
    entries = [
        post(patient(good_value)),                                   # 201
        post(patient(unique_ins(), gender="woman")),                 # 422: structure
        post(document("no-such-patient")),                           # 422: dangling DMP
        get(f"Patient/{uuid.uuid4()}"),                              # 404
        put({k: v for k, v in a.items() if k != "meta"} | {"gender": "male"}, ifMatch='W/"5"'),  # 412
        patch(f"Patient/{a['id']}", [{"op": "replace", "path": "/gender", "value": "other"}]),  # 200
        get(f"Patient/{a['id']}"),                                   # 200, after the patch (request order)
    ]
    before_history = written(client)
    response = send(client, entries, "batch")
    assert response.status_code == 200, response.data
    body = json_of(response)
    assert body["type"] == "batch-response"
    out = body["entry"]
    assert [e["response"]["status"][:3] for e in out] == ["201", "422", "422", "404", "412", "200", "200"]
    for failed in (out[1], out[2], out[3], out[4]):
        assert failed["response"]["outcome"]["resourceType"] == "OperationOutcome"
        assert failed["response"]["outcome"]["issue"]
        assert "resource" not in failed
    outcome = out[1]["response"]["outcome"]
    assert any(i.get("expression", [""])[0].endswith("gender") for i in outcome["issue"])
    # the good ones are committed
    assert total(client, f"Patient?{ins(good_value)}") == 1
    assert json_of(client.get(f"Patient/{a['id']}"))["gender"] == "other"
    assert out[6]["resource"]["gender"] == "other"
    assert written(client) == before_history + 2


def test_batch_entry_without_a_usable_request_fails_alone(client):
    value = unique_ins()
    entries = [{"resource": patient(unique_ins())},
               {"resource": patient(unique_ins()), "request": {"method": "FROB", "url": "Patient"}},
               post(patient(value))]
    response = send(client, entries, "batch")
    assert response.status_code == 200, response.data
    out = json_of(response)["entry"]
    assert [e["response"]["status"][:3] for e in out] == ["400", "400", "201"]
    assert total(client, f"Patient?{ins(value)}") == 1
    assert total(client, "Patient") == 1


# -- what is not a batch or transaction --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["collection", "searchset", "document", "history", "batch-response", None])
def test_a_bundle_that_is_not_a_batch_or_transaction_is_400(client, kind):
    body = bundle([post(patient(unique_ins()))], kind or "x")
    if kind is None:
        del body["type"]
    response = client.post("/fhir", body)
    assert response.status_code == 400, response.data
    assert issues_of(response)
    assert total(client, "Patient") == 0


def test_a_resource_that_is_not_a_bundle_is_400_at_the_base(client):
    response = client.post("/fhir", patient(unique_ins()))
    assert response.status_code == 400, response.data
    assert total(client, "Patient") == 0


def test_batch_entry_whose_request_is_not_an_object_fails_alone(client):
    value = unique_ins()
    entries = [{"resource": patient(unique_ins()), "request": "POST Patient"}, post(patient(value))]
    response = send(client, entries, "batch")
    assert response.status_code == 200, response.data
    out = json_of(response)["entry"]
    assert [e["response"]["status"][:3] for e in out] == ["400", "201"]
    assert out[0]["response"]["outcome"]["issue"]
    assert total(client, "Patient") == 1
