"""The FHIR R4 RESTful API (http://hl7.org/fhir/R4/http.html) over HTTP, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import pytest

from tests.fhirclient import document, json_of, patient
from tests.http.helpers import bundle, create, history_total, ids, link, new_patient, outcome, pause, walk

INS = "urn:oid:1.2.250.1.213.1.4.10"
OTHER = "http://example.test/mrn"


def stripped(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


# -- create ---------------------------------------------------------------------------------------
def test_create_assigns_id_and_meta_and_keeps_the_rest(client):
    sent = patient(id="client-chosen", meta={"versionId": "42", "lastUpdated": "2001-01-01T00:00:00Z",
                                             "profile": ["http://example.test/StructureDefinition/p"],
                                             "tag": [{"system": "http://example.test/tags", "code": "t1"}]},
                   extension=[{"url": "https://hl7.fr/ig/test/weight", "valueDecimal": Decimal("1.50")}])
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    resp = client.post("Patient", sent)
    assert resp.status_code == 201
    body = json_of(resp)
    rid = body["id"]
    assert rid != "client-chosen"
    assert resp.headers["Location"].endswith(f"/fhir/Patient/{rid}/_history/1")
    assert resp.headers["ETag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    updated = datetime.fromisoformat(body["meta"]["lastUpdated"].replace("Z", ""))
    assert updated >= before
    modified = parsedate_to_datetime(resp.headers["Last-Modified"]).replace(tzinfo=None)
    assert modified == updated.replace(microsecond=0)
    assert body["meta"]["profile"] == sent["meta"]["profile"]
    assert body["meta"]["tag"] == sent["meta"]["tag"]
    assert stripped(body) == stripped(sent)
    assert b'"valueDecimal":1.50' in resp.data
    read = client.get(f"Patient/{rid}")
    assert json_of(read) == body
    assert b'"valueDecimal":1.50' in read.data
    assert client.get("Patient/client-chosen").status_code == 404


def test_create_body_must_match_the_type(client):
    outcome(client.post("Patient", document("x")), 400)
    outcome(client.post("Patient", {"gender": "female"}), 400, "structure")
    outcome(client.post("Patient", patient(gender="robot")), 422)  # parsed, but R4 refuses it: 422
    outcome(client.post("Patient", patient(unknownElement=True)), 422)
    assert history_total(client) == 0


def test_document_reference_to_a_missing_patient_is_422_and_writes_nothing(client):
    body = outcome(client.post("DocumentReference", document("no-such-patient")), 422)
    assert ["DocumentReference.subject"] in [i.get("expression") for i in body["issue"]]
    assert bundle(client, "DocumentReference")["total"] == 0
    assert history_total(client) == 0
    pid = new_patient(client)
    assert create(client, document(pid))["subject"] == {"reference": f"Patient/{pid}"}


# -- read / vread ---------------------------------------------------------------------------------
def test_read_unknown_deleted_and_conditional(client):
    outcome(client.get("Patient/does-not-exist"), 404, "not-found")
    pid = new_patient(client)
    resp = client.get(f"Patient/{pid}")
    assert resp.status_code == 200 and resp.headers["ETag"] == 'W/"1"' and "Last-Modified" in resp.headers
    not_modified = client.get(f"Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304 and not_modified.data == b""
    assert client.get(f"Patient/{pid}", headers={"If-None-Match": 'W/"7"'}).status_code == 200
    assert client.get(f"Patient/{pid}", headers={"If-None-Match": "*"}).status_code == 304
    assert client.delete(f"Patient/{pid}").status_code == 204
    outcome(client.get(f"Patient/{pid}"), 410)


def test_vread(client):
    pid = new_patient(client)
    v1 = json_of(client.get(f"Patient/{pid}"))
    pause()
    assert client.put(f"Patient/{pid}", {**v1, "gender": "male"}).status_code == 200
    old = client.get(f"Patient/{pid}/_history/1")
    assert old.status_code == 200 and old.headers["ETag"] == 'W/"1"'
    assert json_of(old) == v1
    assert json_of(client.get(f"Patient/{pid}/_history/2"))["gender"] == "male"
    outcome(client.get(f"Patient/{pid}/_history/3"), 404)
    outcome(client.get(f"Patient/{pid}/_history/x"), 404)
    outcome(client.get("Patient/unknown/_history/1"), 404)
    assert client.delete(f"Patient/{pid}").status_code == 204
    outcome(client.get(f"Patient/{pid}/_history/3"), 410)
    assert json_of(client.get(f"Patient/{pid}/_history/2"))["gender"] == "male"


# -- update ---------------------------------------------------------------------------------------
def test_update_makes_a_new_version(client):
    created = create(client, patient())
    pid = created["id"]
    pause()
    changed = {**created, "gender": "male", "meta": {"versionId": "99", "tag": [{"code": "x"}]}}
    resp = client.put(f"Patient/{pid}", changed)
    assert resp.status_code == 200
    body = json_of(resp)
    assert resp.headers["ETag"] == 'W/"2"'
    assert resp.headers["Location"].endswith(f"/Patient/{pid}/_history/2")
    assert body["meta"]["versionId"] == "2" and body["meta"]["tag"] == [{"code": "x"}]
    assert body["meta"]["lastUpdated"] > created["meta"]["lastUpdated"]
    assert body["gender"] == "male"
    assert json_of(client.get(f"Patient/{pid}")) == body
    latest = bundle(client, f"Patient/{pid}/_history")["entry"][0]
    assert latest["request"] == {"method": "PUT", "url": f"Patient/{pid}"} and latest["resource"] == body


@pytest.mark.parametrize("if_match, status", [('W/"1"', 200), ('"1"', 200), ('W/"2"', 412), ('W/"0"', 412),
                                              ("garbage", 400), ('W/"one"', 400)])
def test_update_if_match(client, if_match, status):
    created = create(client, patient())
    resp = client.put(f"Patient/{created['id']}", {**created, "gender": "other"},
                      headers={"If-Match": if_match})
    assert resp.status_code == status, resp.data
    version = "2" if status == 200 else "1"
    if status != 200:
        outcome(resp, status)
    assert json_of(client.get(f"Patient/{created['id']}"))["meta"]["versionId"] == version


def test_update_of_a_deleted_resource_revives_it(client):
    created = create(client, patient())
    pid = created["id"]
    client.delete(f"Patient/{pid}")
    resp = client.put(f"Patient/{pid}", created)
    assert resp.status_code == 200 and json_of(resp)["meta"]["versionId"] == "3"
    assert client.get(f"Patient/{pid}").status_code == 200


# -- conditional create / update / delete ---------------------------------------------------------
def test_conditional_create(client):
    cond = {"If-None-Exist": f"identifier={INS}|1800175123456"}
    first = client.post("Patient", patient(), headers=cond)
    assert first.status_code == 201
    again = client.post("Patient", patient(gender="male"), headers=cond)
    assert again.status_code == 200
    assert json_of(again) == json_of(first)
    assert again.headers["ETag"] == 'W/"1"'
    assert bundle(client, "Patient")["total"] == 1 and history_total(client) == 1
    new_patient(client, "1800175123457")  # one DMP per INS: several matches come from another criterion
    outcome(client.post("Patient", patient(), headers={"If-None-Exist": "family=MARTIN"}), 412)
    outcome(client.post("Patient", patient(), headers={"If-None-Exist": "nonsense=1"}), 400)
    assert history_total(client) == 2


def test_conditional_update(client):
    url = f"Patient?identifier={INS}|2900175123456"
    created = client.put(url, patient("2900175123456"))
    assert created.status_code == 201
    pid = json_of(created)["id"]
    updated = client.put(url, patient("2900175123456", gender="male"))
    assert updated.status_code == 200
    assert json_of(updated)["id"] == pid and json_of(updated)["meta"]["versionId"] == "2"
    same_id = client.put(url, patient("2900175123456", id=pid, gender="other"))
    assert same_id.status_code == 200 and json_of(same_id)["meta"]["versionId"] == "3"
    outcome(client.put(url, patient("2900175123456", id="someone-else")), 400)
    new_patient(client, "2900175123457")  # one DMP per INS: several matches come from another criterion
    outcome(client.put("Patient?family=MARTIN", patient("2900175123456")), 412)
    outcome(client.put("Patient?bogus=1", patient()), 400)
    nobody = f"Patient?identifier={INS}|3900175123456"
    outcome(client.put(nobody, patient("3900175123456", id="client-id")), 405)
    outcome(client.put(nobody, patient("3900175123456", id=pid)), 409)
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "3"
    assert history_total(client) == 4


def test_conditional_delete(client):
    keep = new_patient(client, "1111111111111")
    gone = new_patient(client, "2222222222222")
    assert client.delete(f"Patient?identifier={INS}|2222222222222").status_code == 204
    outcome(client.get(f"Patient/{gone}"), 410)
    assert client.delete(f"Patient?identifier={INS}|9999999999999").status_code == 204
    new_patient(client, "1111111111112")  # one DMP per INS: several matches come from another criterion
    outcome(client.delete("Patient?family=MARTIN"), 412)
    assert client.get(f"Patient/{keep}").status_code == 200
    assert history_total(client) == 4


# -- patch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ops, check", [
    ([{"op": "replace", "path": "/gender", "value": "male"}], lambda r: r["gender"] == "male"),
    ([{"op": "add", "path": "/active", "value": True}], lambda r: r["active"] is True),
    ([{"op": "add", "path": "/telecom", "value": [{"system": "phone", "value": "0600000000"}, {"system": "email"}]},
      {"op": "remove", "path": "/telecom/1"}], lambda r: r["telecom"] == [{"system": "phone", "value": "0600000000"}]),
    ([{"op": "test", "path": "/gender", "value": "female"},
      {"op": "add", "path": "/name/0/given/-", "value": "Anne"}],
     lambda r: r["name"][0]["given"] == ["Claire", "Anne"]),
])
def test_patch(client, ops, check):
    pid = new_patient(client)
    resp = client.patch(f"Patient/{pid}", ops, headers={"If-Match": 'W/"1"'})
    assert resp.status_code == 200, resp.data
    assert resp.headers["ETag"] == 'W/"2"'
    body = json_of(resp)
    assert check(body) and body["meta"]["versionId"] == "2"
    assert json_of(client.get(f"Patient/{pid}")) == body
    latest = bundle(client, f"Patient/{pid}/_history")["entry"][0]
    assert latest["request"] == {"method": "PATCH", "url": f"Patient/{pid}"} and latest["resource"] == body


@pytest.mark.parametrize("ops, headers, content_type, status", [
    ([{"op": "test", "path": "/gender", "value": "male"}], {}, None, 422),
    ([{"op": "replace", "path": "/id", "value": "other"}], {}, None, 422),
    ([{"op": "remove", "path": "/nothing-here"}], {}, None, 422),
    ([{"op": "replace", "path": "/gender", "value": "robot"}], {}, None, 422),
    ([{"op": "remove", "path": "/birthDate"}], {}, None, 422),  # the DMP profile requires it
    ([{"op": "frobnicate", "path": "/gender"}], {}, None, 400),
    ([{"path": "/gender", "value": "male"}], {}, None, 400),
    ({"op": "replace", "path": "/gender", "value": "male"}, {}, None, 400),
    ({"resourceType": "Observation", "status": "final"}, {}, "application/fhir+json", 400),  # not a Patient
    ({"gender": "male"}, {}, "text/plain", 415),
    ([{"op": "replace", "path": "/gender", "value": "male"}], {"If-Match": 'W/"2"'}, None, 412),
    ([{"op": "replace", "path": "/gender", "value": "male"}], {"If-Match": "nope"}, None, 400),
])
def test_patch_refused_writes_nothing(client, ops, headers, content_type, status):
    pid = new_patient(client)
    kw = {"content_type": content_type} if content_type else {}
    outcome(client.patch(f"Patient/{pid}", ops, headers=headers, **kw), status)
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"
    assert history_total(client) == 1


def test_patch_unknown_or_deleted(client):
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    outcome(client.patch("Patient/nobody", ops), 404)
    pid = new_patient(client)
    client.delete(f"Patient/{pid}")
    outcome(client.patch(f"Patient/{pid}", ops), 410)


# -- delete ---------------------------------------------------------------------------------------
def test_delete_is_idempotent_and_versioned(client):
    pid = new_patient(client)
    first = client.delete(f"Patient/{pid}")
    assert first.status_code == 204 and first.data == b"" and first.headers["ETag"] == 'W/"2"'
    assert client.delete(f"Patient/{pid}").status_code == 204
    assert bundle(client, f"Patient/{pid}/_history")["total"] == 2
    assert client.delete("Patient/never-existed").status_code == 204
    assert history_total(client) == 2 and bundle(client, "Patient")["total"] == 0


# -- history --------------------------------------------------------------------------------------
def _scenario(client) -> tuple[str, str, str]:
    """p1 created, p1 updated, p2 created, a document created, p1 deleted; distinct milliseconds."""
    p1 = create(client, patient("1111111111111"))
    pause()
    client.put(f"Patient/{p1['id']}", {**p1, "gender": "male"})
    pause()
    p2 = new_patient(client, "2222222222222")
    pause()
    doc = create(client, document(p2))["id"]
    pause()
    client.delete(f"Patient/{p1['id']}")
    return p1["id"], p2, doc


def _summary(body: dict) -> list[tuple]:
    return [(e["fullUrl"].rsplit("/", 2)[-2], e["fullUrl"].rsplit("/", 1)[-1], e["request"]["method"],
             e["response"]["etag"]) for e in body.get("entry", [])]


def test_history_instance_type_and_system(client):
    p1, p2, doc = _scenario(client)
    instance = bundle(client, f"Patient/{p1}/_history")
    assert instance["type"] == "history" and instance["total"] == 3
    assert _summary(instance) == [("Patient", p1, "DELETE", 'W/"3"'), ("Patient", p1, "PUT", 'W/"2"'),
                                  ("Patient", p1, "POST", 'W/"1"')]
    deletion, put, post = instance["entry"]
    assert "resource" not in deletion
    assert deletion["request"]["url"] == f"Patient/{p1}" and deletion["response"]["status"].startswith("204")
    assert put["request"]["url"] == f"Patient/{p1}" and put["response"]["status"].startswith("200")
    assert post["request"]["url"] == "Patient" and post["response"]["status"].startswith("201")
    assert put["resource"]["gender"] == "male" and post["resource"]["meta"]["versionId"] == "1"
    typed = bundle(client, "Patient/_history")
    assert [(t, i, m) for t, i, m, _ in _summary(typed)] == [
        ("Patient", p1, "DELETE"), ("Patient", p2, "POST"), ("Patient", p1, "PUT"), ("Patient", p1, "POST")]
    system = bundle(client, "_history")
    assert system["total"] == 5
    assert [(t, i) for t, i, _, _ in _summary(system)] == [
        ("Patient", p1), ("DocumentReference", doc), ("Patient", p2), ("Patient", p1), ("Patient", p1)]
    outcome(client.get("Patient/unknown/_history"), 404)


@pytest.mark.parametrize("path", ["_history", "Patient/_history", "PATIENT_ID/_history"])
def test_history_paging_has_no_repeat_or_gap(client, path):
    pid = create(client, patient())["id"]
    for gender in ("male", "female", "other", "unknown", "male"):
        current = json_of(client.get(f"Patient/{pid}"))
        assert client.put(f"Patient/{pid}", {**current, "gender": gender}).status_code == 200
    new_patient(client, "2222222222222")
    path = path.replace("PATIENT_ID", f"Patient/{pid}")
    everything = bundle(client, f"{path}?_count=100")
    paged, pages = walk(client, f"{path}?_count=2")
    assert pages == (everything["total"] + 1) // 2
    assert _summary({"entry": paged}) == _summary(everything)
    assert len(set(_summary(everything))) == everything["total"]
    first = bundle(client, f"{path}?_count=2")
    assert len(first["entry"]) == 2 and first["total"] == everything["total"]


def test_history_since(client):
    p1, p2, doc = _scenario(client)
    p2_created = json_of(client.get(f"Patient/{p2}/_history/1"))["meta"]["lastUpdated"]
    since = bundle(client, f"_history?_since={p2_created}")
    assert [(t, i) for t, i, _, _ in _summary(since)] == [("Patient", p1), ("DocumentReference", doc),
                                                          ("Patient", p2)]
    assert since["total"] == 3
    paged, pages = walk(client, f"_history?_since={p2_created}&_count=1")
    assert pages == 3 and _summary({"entry": paged}) == _summary(since)
    assert bundle(client, f"Patient/{p1}/_history?_since={p2_created}")["total"] == 1
    assert bundle(client, "_history?_since=2999-01-01T00:00:00Z").get("entry") is None
    outcome(client.get("_history?_since=2020-01-01"), 400)
    outcome(client.get("_history?_count=-1"), 400)


# -- search ---------------------------------------------------------------------------------------
def test_search_by_id_and_identifier(client):
    def with_ins(n: int, other: dict) -> list[dict]:
        return [{"system": INS, "value": f"180017512345{n}"}, other]
    a = new_patient(client, identifier=with_ins(1, {"system": OTHER, "value": "v1"}))
    b = new_patient(client, identifier=with_ins(2, {"system": "http://example.test/other", "value": "v1"}))
    c = new_patient(client, identifier=with_ins(3, {"value": "v1"}))
    d = new_patient(client, identifier=with_ins(4, {"system": OTHER, "value": "v2"}))
    cases = {
        f"_id={a}": {a}, f"_id={a},{c}": {a, c}, "_id=nothing": set(),
        f"identifier={OTHER}|v1": {a}, "identifier=v1": {a, b, c}, "identifier=|v1": {c},
        f"identifier={OTHER}|": {a, d}, f"identifier={OTHER}|v1,{OTHER}|v2": {a, d},
        f"identifier=v1&_id={b}": {b},
    }
    for query, expected in cases.items():
        found = bundle(client, f"Patient?{query.replace('|', quote('|'))}")
        assert set(ids(found)) == expected, query
        assert found["total"] == len(expected), query


def _shift(instant: str) -> str:
    """The same instant written in UTC+02:00."""
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return moment.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")


def test_search_last_updated(client):
    first = create(client, patient("1111111111111"))
    pause()
    second = create(client, patient("2222222222222"))
    t1, t2 = first["meta"]["lastUpdated"], second["meta"]["lastUpdated"]
    cases = {f"ge{t2}": {second["id"]}, f"lt{t2}": {first["id"]}, f"eq{t2}": {second["id"]},
             t1: {first["id"]}, f"le{t2}": {first["id"], second["id"]}, f"gt{t1}": {second["id"]},
             f"ge{t1[:10]}": {first["id"], second["id"]}, "lt2000-01-01": set(),
             f"ge{_shift(t2)}": {second["id"]}, f"lt{_shift(t2)}": {first["id"]}, f"ne{t2}": {first["id"]}}
    for value, expected in cases.items():
        assert set(ids(bundle(client, f"Patient?_lastUpdated={quote(value)}"))) == expected, value
    outcome(client.get("Patient?_lastUpdated=yesterday"), 400)


def test_search_documents_by_patient(client):
    p1, p2 = new_patient(client, "1111111111111"), new_patient(client, "2222222222222")
    d1, d2 = create(client, document(p1))["id"], create(client, document(p1))["id"]
    d3 = create(client, document(p2))["id"]
    assert set(ids(bundle(client, f"DocumentReference?patient=Patient/{p1}"))) == {d1, d2}
    assert set(ids(bundle(client, f"DocumentReference?patient={p2}"))) == {d3}
    assert ids(bundle(client, "DocumentReference?patient=Patient/unknown")) == []
    create(client, document(p2, subject={"identifier": {"system": INS, "value": "2222222222222"}}))
    outcome(client.post("DocumentReference",
                        document(p2, subject={"identifier": {"system": INS, "value": "404"}})), 422)


def test_search_count_paging_and_total(client):
    created = {new_patient(client, f"10000000000{n:02d}") for n in range(7)}
    gone = created.pop()
    client.delete(f"Patient/{gone}")
    entries, pages = walk(client, "Patient?_count=2")
    found = [e["resource"]["id"] for e in entries]
    assert sorted(found) == sorted(created) and len(found) == len(set(found)) and pages == 3
    assert all(e["search"]["mode"] == "match" and e["fullUrl"].endswith(e["resource"]["id"]) for e in entries)
    page = bundle(client, "Patient?_count=2")
    assert page["total"] == 6 and len(page["entry"]) == 2 and link(page, "next")
    assert "_count=2" in link(page, "next")
    counted = bundle(client, "Patient?_count=0")
    assert counted["total"] == 6 and "entry" not in counted
    assert "total" not in bundle(client, "Patient?_total=none")
    outcome(client.get("Patient?_count=lots"), 400)


def test_search_post_form(client):
    pid = new_patient(client, identifier=[{"system": INS, "value": "2800175123456"},
                                          {"system": OTHER, "value": "form"}])
    new_patient(client)
    resp = client.post("Patient/_search", raw=f"identifier={quote(OTHER + '|form')}".encode(),
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200
    assert ids(json_of(resp)) == [pid]
    assert history_total(client) == 2
    form = "application/x-www-form-urlencoded"
    outcome(client.post("Patient", raw=b"identifier=x", content_type=form), 415)


def test_search_unknown_parameter_lenient_and_strict(client):
    pid = new_patient(client)
    body = bundle(client, "Patient?frobnicate=1")
    assert ids(body) == [pid] and body["total"] == 1
    outcomes = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1 and outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
    assert "frobnicate" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    outcome(client.get("Patient?frobnicate=1", headers={"Prefer": "handling=strict"}), 400)
    lenient = bundle(client, "Patient?frobnicate=1", headers={"Prefer": "handling=lenient"})
    assert ids(lenient) == [pid]


# -- Prefer -----------------------------------------------------------------------------------------
def test_prefer_return(client):
    minimal = client.post("Patient", patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.data == b"" and minimal.headers["ETag"] == 'W/"1"'
    pid = minimal.headers["Location"].split("/Patient/")[1].split("/")[0]
    full = json_of(client.get(f"Patient/{pid}"))
    rep = client.put(f"Patient/{pid}", full, headers={"Prefer": "return=representation"})
    assert rep.status_code == 200 and json_of(rep)["meta"]["versionId"] == "2"
    oo = client.put(f"Patient/{pid}", full, headers={"Prefer": "return=OperationOutcome"})
    assert oo.status_code == 200 and json_of(oo)["resourceType"] == "OperationOutcome"
    assert json_of(oo)["issue"][0]["severity"] == "information"
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "3"
    patched = client.patch(f"Patient/{pid}", [{"op": "replace", "path": "/gender", "value": "male"}],
                           headers={"Prefer": "return=minimal"})
    assert patched.status_code == 200 and patched.data == b"" and patched.headers["ETag"] == 'W/"4"'


# -- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [("POST", "AuditEvent"), ("PUT", "AuditEvent/a1"),
                                          ("DELETE", "AuditEvent/a1"), ("PATCH", "AuditEvent/a1"),
                                          ("PUT", "AuditEvent?_id=a1"), ("DELETE", "AuditEvent?_id=a1")])
def test_audit_events_are_read_only(client, method, path):
    body = {"resourceType": "AuditEvent", "id": "a1"}
    ops = [{"op": "remove", "path": "/x"}]
    if method == "PATCH":
        resp = client.patch(path, ops)
    else:
        resp = client.request(method, path, None if method == "DELETE" else body)
    outcome(resp, 405, "not-supported")
    # RFC 9110 15.5.6: a 405 says what the URL does take
    assert resp.headers["Allow"] == "GET, HEAD", resp.headers
    outcome(client.get("AuditEvent/a1"), 404)
    assert bundle(client, "AuditEvent")["type"] == "searchset"


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/fhir/metadata", "GET, HEAD"),
    ("PUT", "Patient/absent-id", "GET, HEAD, PATCH, DELETE"),  # no update-as-create
    ("PATCH", "CodeSystem/x", "GET, HEAD"),
    ("POST", "Patient/$vsm-status", "GET, HEAD"),
    ("GET", "Patient/p1/$close", "POST"),
    ("DELETE", "Patient/_search", "POST"),
])
def test_a_405_carries_the_allow_header(client, method, path, allow):
    resp = client.request(method, path, None if method in ("GET", "DELETE") else patient(id="absent-id"))
    outcome(resp, 405, "not-supported")
    assert resp.headers["Allow"] == allow, resp.headers


@pytest.mark.parametrize("method, path", [("GET", "Encounter"), ("GET", "Encounter/1"), ("POST", "Foo"),
                                          ("GET", "notAType"), ("DELETE", "Encounter/1")])
def test_unknown_resource_type_is_404(client, method, path):
    body = {"resourceType": path.split("/")[0]} if method == "POST" else None
    outcome(client.request(method, path, body), 404, "not-found")


# -- nothing written on failure ---------------------------------------------------------------------
FAILURES = [
    ("POST", "Patient", lambda pid: patient(birthDate="17/01/1980"), {}, 422),
    ("POST", "DocumentReference", lambda pid: document("ghost"), {}, 422),
    ("POST", "Patient", lambda pid: patient(), {"If-None-Exist": "nonsense=1"}, 400),
    ("POST", "Patient", lambda pid: patient(), {"If-None-Exist": "identifier=1800175123456&_id=x,PID"}, 200),
    ("PUT", "Patient/PID", lambda pid: patient(id=pid, gender="male"), {"If-Match": 'W/"3"'}, 412),
    ("PUT", "Patient/PID", lambda pid: patient(id=pid, gender="nope"), {}, 422),
    ("PUT", "Patient/other", lambda pid: patient(id="other"), {}, 405),  # no update-as-create
    ("PUT", "Patient/PID", lambda pid: patient(gender="male"), {}, 400),  # no id in the body
    ("PUT", "Patient/PID", lambda pid: patient(id="another-id", gender="male"), {}, 400),
    ("PUT", "Patient?identifier=1800175123456", lambda pid: patient(id="zzz"), {}, 400),
    ("DELETE", "Patient/PID", lambda pid: None, {"If-Match": 'W/"9"'}, 412),
    ("PUT", "DocumentReference/PID", lambda pid: document(pid, id=pid), {}, 405),
]


def _client_writes(body: dict) -> list[tuple]:
    return [row for row in _summary(body) if row[0] != "AuditEvent"]


@pytest.mark.parametrize("method, path, make, headers, status", FAILURES)
def test_failed_writes_leave_no_trace(client, method, path, make, headers, status):
    pid = new_patient(client)
    before = bundle(client, "_history?_count=100")
    resp = client.request(method, path.replace("PID", pid), make(pid),
                          headers={k: v.replace("PID", pid) for k, v in headers.items()})
    if status == 200:  # the existing resource is returned and nothing is written
        assert json_of(resp)["id"] == pid
    else:
        outcome(resp, status)
    after = bundle(client, "_history?_count=100")
    assert _client_writes(after) == _client_writes(before)
    assert bundle(client, "Patient")["total"] == 1
    assert bundle(client, "DocumentReference")["total"] == 0



@pytest.mark.parametrize("method, path", [("POST", "Patient"), ("POST", "Patient/$validate")])
def test_an_xml_body_gets_one_round_of_errors(client, method, path):
    """An unknown element in XML is no 400 of its own: it is listed with the body's other structure and profile
    errors, each with its expression (one 422; $validate: one OperationOutcome)."""
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><foo value="1"/><gender value="robot"/>'
           b'<birthDate value="17/01/1980"/></Patient>')
    response = client.request(method, path, raw=xml, content_type="application/fhir+xml")
    found = outcome(response, 422 if path == "Patient" else 200)
    expressions = {e for i in found["issue"] if i["severity"] == "error" for e in i.get("expression", ())}
    assert {"Patient.foo", "Patient.gender", "Patient.birthDate", "Patient.identifier"} <= expressions, found
