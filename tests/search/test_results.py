"""The search result page (R4 search.html 3.1.1.4-3.1.1.6): _sort, keyset paging links, _include and
_revinclude (with :iterate), _summary, _elements, _total and _count=0, on every backend.

Expected orders are worked out here from the data: a missing value sorts last in both directions, ties
fall back on the next key and finally on creation order (the row key).
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from sqlalchemy import insert

from fhir_dmp.search.parse import SortKey
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import paging
from fhir_dmp.storage import queries as repo
from fhir_dmp.storage.tables import INDEX_TABLES, resource, resource_version
from tests.conftest import SECRET
from tests.fhirclient import FhirTestClient, json_of, patient

SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")
PROFILE = "http://example.test/fhir/StructureDefinition/p-"


# -- helpers ---------------------------------------------------------------------------------------------
def create(client: FhirTestClient, resource_: dict) -> str:
    resp = client.post(resource_["resourceType"], resource_)
    assert resp.status_code == 201, resp.data
    return json_of(resp)["id"]


def get(client: FhirTestClient, path: str) -> dict:
    resp = client.get(path)
    assert resp.status_code == 200, resp.data
    return json_of(resp)


def link(body: dict, relation: str) -> str | None:
    url = next((lk["url"] for lk in body.get("link", []) if lk["relation"] == relation), None)
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def matches(body: dict) -> list[str]:
    return [e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


def included(body: dict) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body.get("entry", [])
            if e["search"]["mode"] == "include"]


def pages(client: FhirTestClient, path: str, relation: str = "next") -> list[list[str]]:
    """The matches of each page, following `relation` links from `path`."""
    out, url = [], path
    while url:
        body = get(client, url)
        out.append(matches(body))
        url = link(body, relation)
        assert len(out) < 100
    return out


def tags(resource_: dict) -> set[tuple[str, str]]:
    return {(t.get("system"), t.get("code")) for t in resource_.get("meta", {}).get("tag", [])}


def doc(subject: str, **extra: Any) -> dict:
    return {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": subject},
            "content": [{"attachment": {"contentType": "text/plain", "data": "Q29tcHRlIHJlbmR1"}}], **extra}


def expected_order(columns: list[tuple[list[Any], bool]], n: int) -> list[int]:
    """Row numbers in the order of the keys (values, descending): missing last, then the row number."""

    def compare(a: int, b: int) -> int:
        for values, descending in columns:
            va, vb = values[a], values[b]
            if va == vb:
                continue
            if va is None or vb is None:
                return 1 if va is None else -1
            return (1 if va < vb else -1) if descending else (-1 if va < vb else 1)
        return a - b

    return sorted(range(n), key=functools.cmp_to_key(compare))


# -- _sort -------------------------------------------------------------------------------------------------
ROWS = [  # family, birthDate, gender, profile suffix, general practitioner (0/1: prA/prB)
    ("beta", "1980-01-01", "female", "b", 1),
    (None, None, "male", None, None),
    ("alpha", "1970-05-05", None, "a", 0),
    ("beta", "1980-01-01", "female", "b", 1),
    ("gamma", None, "other", "c", 0),
    ("alpha", "1990", "male", None, None),
    ("Delta", "1980-01-01", "female", "a", 1),
]


@pytest.fixture
def sorted_world(client: FhirTestClient) -> dict[str, Any]:
    practitioners = [create(client, {"resourceType": "Practitioner", "name": [{"family": f"P{k}"}]}) for k in range(2)]
    ids = []
    for n, (family, birth, gender, profile, gp) in enumerate(ROWS):
        body: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": f"v{n}"}]}
        if family:
            body["name"] = [{"family": family}]
        if birth:
            body["birthDate"] = birth
        if gender:
            body["gender"] = gender
        if profile:
            body["meta"] = {"profile": [PROFILE + profile]}
        if gp is not None:
            body["generalPractitioner"] = [{"reference": f"Practitioner/{practitioners[gp]}"}]
        ids.append(create(client, body))
    values = {
        "family": [f.lower() if f else None for f, *_ in ROWS],
        "birthdate": [(b + "-01-01")[:10] if b and len(b) == 4 else b for _, b, *_ in ROWS],
        "gender": [g for _, _, g, *_ in ROWS],
        "_profile": [PROFILE + p if p else None for *_, p, _ in ROWS],
        "general-practitioner": [practitioners[gp] if gp is not None else None for *_, gp in ROWS],
        "_id": ids,
        "_lastUpdated": list(range(len(ROWS))),
    }
    return {"ids": ids, "values": values}


SORTS = ["family", "-family", "birthdate", "-birthdate", "gender", "-gender", "_profile", "-_profile",
         "general-practitioner", "-general-practitioner", "_id", "-_id", "_lastUpdated", "-_lastUpdated",
         "family,-birthdate", "-gender,family", "gender,-_profile,-family", "-birthdate,_id"]


def test_sort_each_kind_both_directions_with_ties_missing_values_and_several_keys(client, sorted_world):
    ids, values = sorted_world["ids"], sorted_world["values"]
    for sort in SORTS:
        keys = [(values[k.lstrip("-")], k.startswith("-")) for k in sort.split(",")]
        want = [ids[n] for n in expected_order(keys, len(ids))]
        assert matches(get(client, f"Patient?_sort={sort}&_count=50")) == want, sort
        walked = pages(client, f"Patient?_sort={sort}&_count=2")
        assert [i for page in walked for i in page] == want, sort
        assert [len(p) for p in walked] == [2, 2, 2, 1], sort


def test_sort_on_an_unknown_or_unsortable_parameter_is_a_400(client):
    assert client.get("Patient?_sort=nonsense").status_code == 400
    assert client.get("Patient?_sort=-").status_code == 400


def test_sorting_by_number_and_quantity_values_in_the_store(database):
    """No served type has a number or quantity parameter: rows are written straight into the store."""
    numbers = [Decimal("2.5"), None, Decimal("-1"), Decimal("2.5"), Decimal("10"), None]
    pks = []
    with database.transaction(write=True) as conn:
        for n, number in enumerate(numbers):
            common = {"resource_type": "Patient", "id": f"n{n}", "version_id": 1, "patient_key": "",
                      "last_updated": datetime(2024, 1, 1)}
            vpk = conn.execute(insert(resource_version).returning(resource_version.c.pk),
                               {**common, "method": "POST", "deleted": False, "content": "{}"}).scalar_one()
            pk = conn.execute(insert(resource).returning(resource.c.pk),
                              {**common, "deleted": False, "version_pk": vpk}).scalar_one()
            pks.append(pk)
            if number is not None:
                row = {"resource_pk": pk, "resource_type": "Patient", "low": number - 1, "high": number + 1}
                conn.execute(insert(INDEX_TABLES["number"]), {**row, "param": "n"})
                conn.execute(insert(INDEX_TABLES["quantity"]), {**row, "param": "q", "system": "", "code": ""})
                conn.execute(insert(INDEX_TABLES["number"]), {**row, "param": "n", "low": number + 5})
    for kind, param in (("number", "n"), ("quantity", "q")):
        for descending in (False, True):
            sort = (SortKey(param, kind, descending),)
            lows = [n - 1 if n is not None else None for n in numbers]
            want = [f"n{i}" for i in expected_order([(lows, descending)], len(numbers))]
            got, cursor = [], None
            with database.transaction() as conn:
                while True:
                    rows = repo.find(conn, "Patient", c.AllOf(()), scope=c.AllOf(()), sort=sort, cursor=cursor,
                                     limit=2)
                    got += [r.id for r in rows]
                    if len(rows) < 2:
                        break
                    cursor = paging.decode(paging.encode(paging.Cursor(True, rows[-1].sort_key, rows[-1].pk), sort),
                                           sort)
            assert got == want, (kind, descending)


# -- paging ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sort", ["", "&_sort=-birthdate,family", "&_sort=gender"])
def test_paging_yields_every_match_once_in_order_and_previous_links_walk_back(client, sorted_world, sort):
    everything = matches(get(client, f"Patient?_count=100{sort}"))
    assert len(everything) == len(ROWS)
    if not sort:
        assert everything == sorted_world["ids"]  # default order: creation (row key)
    forward = pages(client, f"Patient?_count=3{sort}")
    assert [i for p in forward for i in p] == everything and [len(p) for p in forward] == [3, 3, 1]
    first = get(client, f"Patient?_count=3{sort}")
    assert link(first, "previous") is None and link(first, "first") and link(first, "self")
    assert first["total"] == len(ROWS)
    last_url = f"Patient?_count=3{sort}"
    while link(get(client, last_url), "next"):
        last_url = link(get(client, last_url), "next")
    backward = pages(client, last_url, "previous")
    assert backward == forward[::-1]
    second = get(client, link(first, "next"))
    assert matches(get(client, link(second, "previous"))) == forward[0]
    assert link(get(client, link(second, "previous")), "previous") is None
    assert matches(get(client, link(get(client, link(second, "previous")), "next"))) == forward[1]


def cursor_of(body: dict, relation: str = "next") -> str:
    return dict(p.split("=", 1) for p in urlsplit(link(body, relation)).query.split("&"))["_cursor"]


def test_malformed_or_foreign_cursors_are_400(client, sorted_world):
    first = get(client, "Patient?_count=2&_sort=birthdate")
    good = cursor_of(first)
    assert client.get(f"Patient?_count=2&_sort=birthdate&_cursor={good}").status_code == 200
    doc_ = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))

    def forged(**change: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps({**doc_, **change}).encode()).decode().rstrip("=")

    bad = ["abc", "!!!", "12", good[:-3], base64.urlsafe_b64encode(b"[1,2]").decode(), forged(v=99),
           forged(pk="7"), forged(k=["not a date"]), forged(k=[]), forged(d="x"), "a" * 5000]
    for cursor in bad:
        resp = client.get(f"Patient?_count=2&_sort=birthdate&_cursor={quote(cursor)}")
        assert resp.status_code == 400, cursor
        assert json_of(resp)["resourceType"] == "OperationOutcome"
    assert client.get(f"Patient?_count=2&_sort=family&_cursor={good}").status_code == 400  # another order
    assert client.get(f"Patient?_count=2&_cursor={good}").status_code == 400


def test_paging_while_another_client_inserts_never_repeats_or_skips(app, client):
    originals = {create(client, patient(f"1800175000{n:03d}", birthDate=f"19{50 + n}-01-01")) for n in range(18)}
    done, errors = threading.Event(), []

    def insert_more(round_: int) -> None:
        writer = FhirTestClient(app.test_client(), SECRET)
        try:
            for n in range(30):
                if done.is_set():
                    break
                create(writer, patient(f"28001750{round_}{n:03d}", birthDate=f"19{40 + n * 2}-06-01"))
                time.sleep(0.002)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    reader = FhirTestClient(app.test_client(), SECRET)
    for round_, sort in enumerate(("", "&_sort=birthdate", "&_sort=-birthdate")):
        done.clear()
        thread = threading.Thread(target=insert_more, args=(round_,))
        thread.start()
        seen: list[str] = []
        url: str | None = f"Patient?_count=4{sort}"
        while url:
            body = get(reader, url)
            seen += matches(body)
            url = link(body, "next")
            time.sleep(0.01)
        done.set()
        thread.join(timeout=120)
        assert not errors, errors
        assert [i for i, k in Counter(seen).items() if k > 1] == [], sort
        assert originals <= set(seen), sort


# -- _include / _revinclude --------------------------------------------------------------------------------
@pytest.fixture
def linked(client: FhirTestClient) -> dict[str, str]:
    w: dict[str, str] = {}
    w["org"] = create(client, {"resourceType": "Organization", "name": "Clinique"})
    w["gone"] = create(client, {"resourceType": "Organization", "name": "Fermee"})
    w["prA"] = create(client, {"resourceType": "Practitioner", "name": [{"family": "A"}]})
    w["prB"] = create(client, {"resourceType": "Practitioner", "name": [{"family": "B"}]})
    w["role"] = create(client, {"resourceType": "PractitionerRole",
                                "practitioner": {"reference": f"Practitioner/{w['prA']}"},
                                "organization": {"reference": f"Organization/{w['org']}"}})
    w["p1"] = create(client, patient("1800175123456", generalPractitioner=[{"reference": f"Organization/{w['org']}"}]))
    w["p2"] = create(client, patient("2800175123456", managingOrganization={"reference": f"Organization/{w['gone']}"}))
    w["d1"] = create(client, doc(f"Patient/{w['p1']}", author=[{"reference": f"Practitioner/{w['prA']}"}]))
    w["d2"] = create(client, doc(f"Patient/{w['p1']}", author=[{"reference": f"Practitioner/{w['prA']}"},
                                                               {"reference": f"Organization/{w['org']}"}]))
    replaces = {"code": "replaces", "target": {"reference": f"DocumentReference/{w['d1']}"}}
    w["d3"] = create(client, doc(f"Patient/{w['p2']}", author=[{"reference": f"PractitionerRole/{w['role']}"}],
                                 relatesTo=[replaces]))
    w["d4"] = create(client, doc(f"Patient/{w['p2']}", author=[{"reference": f"Organization/{w['gone']}"}]))
    assert client.delete(f"Organization/{w['gone']}").status_code == 204
    return w


def refs(w: dict[str, str], *names: str) -> list[str]:
    types = {"o": "Organization", "g": "Organization", "p": "Patient", "d": "DocumentReference",
             "r": "PractitionerRole"}
    return sorted(f"{'Practitioner' if n.startswith('pr') else types[n[0]]}/{w[n]}" for n in names)


def test_include_author_once_each_with_mode_include(client, linked):
    w = linked
    body = get(client, f"DocumentReference?_id={w['d1']},{w['d2']}&_include=DocumentReference:author")
    assert sorted(matches(body)) == sorted([w["d1"], w["d2"]])
    assert sorted(included(body)) == refs(w, "prA", "org")  # prA once, though both documents name it
    assert all(e["search"]["mode"] in ("match", "include") for e in body["entry"])
    assert all(e["fullUrl"].endswith(e["resource"]["id"]) for e in body["entry"])
    assert body["total"] == 2  # includes are not counted


def test_include_subject_target_type_star_and_deleted_targets(client, linked):
    w = linked
    subject = get(client, "DocumentReference?_include=DocumentReference:subject")
    assert sorted(included(subject)) == refs(w, "p1", "p2")
    only_orgs = get(client, "DocumentReference?_include=DocumentReference:author:Organization")
    assert sorted(included(only_orgs)) == refs(w, "org")  # the deleted organisation is not included
    star = get(client, f"DocumentReference?_id={w['d3']}&_include=DocumentReference:*")
    assert sorted(included(star)) == refs(w, "p2", "role", "d1")
    assert client.get("DocumentReference?_include=Patient:organization").status_code == 400  # not :iterate


def test_include_never_repeats_a_resource_of_the_page(client, linked):
    w = linked
    body = get(client, f"DocumentReference?_id={w['d1']},{w['d3']}&_include=DocumentReference:relatesto")
    assert sorted(matches(body)) == sorted([w["d1"], w["d3"]]) and included(body) == []
    ids = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body["entry"]]
    assert len(ids) == len(set(ids))


def test_include_iterate_two_levels(client, linked):
    w = linked
    body = get(client, f"DocumentReference?_id={w['d3']}&_include=DocumentReference:author"
                       "&_include:iterate=PractitionerRole:practitioner&_include:iterate=PractitionerRole:organization")
    assert sorted(included(body)) == refs(w, "role", "prA", "org")
    one_level = get(client, f"DocumentReference?_id={w['d3']}&_include=DocumentReference:author")
    assert sorted(included(one_level)) == refs(w, "role")
    # :iterate follows what was included (Patient -> its GP organisation), not only the matches
    chained = get(client, f"DocumentReference?_id={w['d1']}&_include=DocumentReference:subject"
                          "&_include:iterate=Patient:general-practitioner")
    assert sorted(included(chained)) == refs(w, "p1", "org")
    plain = get(client, f"DocumentReference?_id={w['d1']}&_include=DocumentReference:subject")
    assert sorted(included(plain)) == refs(w, "p1")


def test_revinclude_and_revinclude_then_iterate(client, linked):
    w = linked
    body = get(client, f"Patient?_id={w['p1']}&_revinclude=DocumentReference:subject")
    assert matches(body) == [w["p1"]] and sorted(included(body)) == refs(w, "d1", "d2")
    deeper = get(client, f"Patient?_id={w['p1']}&_revinclude=DocumentReference:subject"
                         "&_include:iterate=DocumentReference:author:Practitioner")
    assert sorted(included(deeper)) == refs(w, "d1", "d2", "prA")
    roles = get(client, f"Practitioner?_id={w['prA']}&_revinclude=PractitionerRole:practitioner"
                        "&_revinclude:iterate=DocumentReference:author")
    assert sorted(included(roles)) == refs(w, "role", "d1", "d2", "d3")
    assert client.get("Patient?_revinclude=Nothing:subject").status_code == 400
    assert client.get("Patient?_include=DocumentReference:subject").status_code == 400


# -- _summary / _elements ----------------------------------------------------------------------------------
FULL = patient("1800175123456", text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">C</div>'},
               contact=[{"name": {"family": "Frere"}}], photo=[{"contentType": "image/png", "data": "iVBORw0KGgo="}],
               maritalStatus={"text": "M"}, deceasedBoolean=False,
               meta={"tag": [{"system": "http://example.test/tags", "code": "vip"}]})


def shaped(client: FhirTestClient, pid: str, query: str) -> tuple[dict, dict]:
    """(the read, the search match) for the same query."""
    read = get(client, f"Patient/{pid}?{query}")
    found = get(client, f"Patient?_id={pid}&{query}")["entry"][0]["resource"]
    return read, found


def test_summary_true_keeps_summary_elements_and_tags_the_subset(client):
    pid = create(client, FULL)
    for res in shaped(client, pid, "_summary=true"):
        assert {"identifier", "name", "gender", "birthDate", "deceasedBoolean", "id", "meta"} <= set(res)
        assert not {"contact", "photo", "text", "maritalStatus"} & set(res)
        assert tags(res) == {SUBSETTED, ("http://example.test/tags", "vip")}
    whole = get(client, f"Patient/{pid}")
    assert "contact" in whole and SUBSETTED not in tags(whole)


def test_summary_text_data_false(client):
    pid = create(client, FULL)
    for res in shaped(client, pid, "_summary=text"):
        assert set(res) == {"resourceType", "id", "meta", "text"} and SUBSETTED in tags(res)
    for res in shaped(client, pid, "_summary=data"):
        assert "text" not in res and {"contact", "photo", "maritalStatus", "name"} <= set(res)
        assert SUBSETTED in tags(res)
    for res in shaped(client, pid, "_summary=false"):
        assert {"text", "contact", "photo"} <= set(res) and SUBSETTED not in tags(res)
    did = create(client, doc(f"Patient/{pid}", description="x"))
    text = get(client, f"DocumentReference/{did}?_summary=text")
    assert {"status", "content"} <= set(text) and "description" not in text and "subject" not in text
    assert client.get(f"Patient/{pid}?_summary=maybe").status_code == 400
    assert client.get(f"Patient/{pid}?_summary=count").status_code == 400


def test_summary_count_gives_the_total_only(client):
    for n in range(3):
        create(client, patient(f"180017512345{n}"))
    body = get(client, "Patient?_summary=count")
    assert body["total"] == 3 and "entry" not in body and link(body, "next") is None


def test_summary_applies_to_included_resources(client, linked):
    w = linked
    body = get(client, f"DocumentReference?_id={w['d1']}&_include=DocumentReference:subject&_summary=true")
    kinds = {e["resource"]["resourceType"]: e["resource"] for e in body["entry"]}
    assert set(kinds) == {"DocumentReference", "Patient"}
    assert all(SUBSETTED in tags(r) for r in kinds.values())


def test_elements_keeps_the_listed_elements_with_id_meta_and_mandatory_ones(client):
    pid = create(client, FULL)
    for res in shaped(client, pid, "_elements=name,deceased"):
        assert set(res) == {"resourceType", "id", "meta", "name", "deceasedBoolean"}
        assert SUBSETTED in tags(res)
    did = create(client, doc(f"Patient/{pid}", description="x"))
    kept = get(client, f"DocumentReference?_id={did}&_elements=description")["entry"][0]["resource"]
    assert set(kept) == {"resourceType", "id", "meta", "description", "status", "content"}
    prefixed = get(client, f"Patient/{pid}?_elements=Patient.gender")
    assert set(prefixed) == {"resourceType", "id", "meta", "gender"}


# -- _total and _count=0 -----------------------------------------------------------------------------------
def test_total_none_accurate_estimate_and_count_zero(client):
    for n in range(5):
        create(client, patient(f"180017512345{n}", gender="male" if n % 2 else "female"))
    assert "total" not in get(client, "Patient?_total=none")
    assert get(client, "Patient?_total=accurate&_count=2&gender=female")["total"] == 3
    assert get(client, "Patient?_total=estimate&gender=male")["total"] == 2
    assert get(client, "Patient?_count=2")["total"] == 5
    zero = get(client, "Patient?_count=0&gender=female")
    assert zero["total"] == 3 and "entry" not in zero and link(zero, "next") is None
    assert get(client, "Patient?_count=0&_total=none")["total"] == 5
