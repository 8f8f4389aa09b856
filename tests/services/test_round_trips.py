"""What one request costs in SQL: statements and transactions of a read, a search and a create, counted as they are
sent (storage/statements.py), so that a regression (a query per row, a second transaction, a re-read of the DMP)
fails here rather than in production. PostgreSQL's figures are exact: each statement is a round trip there.
SQLite runs in-process, where a round trip costs nothing and a write is a few plain statements: bounded only."""

from __future__ import annotations

import pytest

from fhir_dmp.storage.statements import counting, watch
from tests.fhirclient import DOCTOR, document, json_of, patient


@pytest.fixture
def world(client, database):  # type: ignore[no-untyped-def]
    doctor = client.as_(**DOCTOR)
    response = doctor.post("Patient", patient("1800175123456"))  # the médecin who opens the DMP is authorised
    assert response.status_code == 201, response.data
    pid = json_of(response)["id"]
    docs = [json_of(doctor.post("DocumentReference", document(pid)))["id"] for _ in range(3)]
    doctor.get(f"DocumentReference/{docs[0]}")  # the first access (and its notice) is behind us
    watch(database.engine)
    return doctor, pid, docs


# (statements on PostgreSQL, at most on SQLite): one transaction each, its trace included
# a search whose page holds every match needs no count; a create of a document asks once which subscriptions may
# hear of it (services/events.py: one indexed statement, empty when nobody subscribes)
BUDGET = {"read": (3, 14), "search": (3, 14), "create": (4, 17)}


def _cost(database, send):  # type: ignore[no-untyped-def]
    with counting() as counts:
        response = send()
    assert response.status_code < 300, response.data
    return counts


@pytest.mark.parametrize("interaction", sorted(BUDGET))
def test_one_transaction_and_few_round_trips(world, database, interaction):  # type: ignore[no-untyped-def]
    doctor, pid, docs = world
    send = {
        "read": lambda: doctor.get(f"DocumentReference/{docs[1]}"),
        "search": lambda: doctor.get(f"DocumentReference?patient={pid}&status=current"),
        "create": lambda: doctor.post("DocumentReference", document(pid)),
    }[interaction]
    counts = _cost(database, send)
    exact, bound = BUDGET[interaction]
    assert counts.transactions == 1
    if database.is_sqlite:
        assert counts.statements <= bound, counts
    else:
        assert counts.statements == exact, counts


def test_a_read_does_not_reread_the_dmp(world, database):  # type: ignore[no-untyped-def]
    """The DMP's access facts come with the row's key (one statement), not from its Patient and Consents."""
    doctor, _pid, docs = world
    with counting() as counts:
        assert doctor.get(f"DocumentReference/{docs[2]}").status_code == 200
    assert not any("Consent" in s for s in counts.texts), counts.texts
    assert sum("dmp_facts" in s for s in counts.texts) == 1, counts.texts


def test_an_iti65_of_ten_documents_is_a_handful_of_statements(world, database):  # type: ignore[no-untyped-def]
    """Issue 16: one DMP lookup, every entry stored at once, the trace: however many documents the Bundle has."""
    from tests.mhd.helpers import iti65

    doctor, pid, _docs = world
    bundle = iti65(pid, [(document(pid), f"document {i}".encode()) for i in range(10)])
    with counting() as counts:
        response = doctor.post("/fhir", bundle)
    assert response.status_code == 200, response.data
    assert counts.transactions == 1
    # issue 16: at most 12; issue 19: + the subscriptions' one check
    assert counts.statements <= (4 if not database.is_sqlite else 80), counts


def test_a_list_costs_one_statement_more_whatever_its_entries(world, database):  # type: ignore[no-untyped-def]
    """A SubmissionSet shown to a professional leaves out the entries naming what they may not see
    (policy/lists.py): decided in one statement for every List of the answer, however many entries they have."""
    from tests.mhd.helpers import iti65

    doctor, pid, _docs = world
    for size in (10, 3):
        response = doctor.post("/fhir", iti65(pid, [(document(pid), f"document {i}".encode()) for i in range(size)]))
        assert response.status_code == 200, response.data
    lists = json_of(doctor.get(f"List?patient={pid}"))["entry"]
    assert sorted(len(e["resource"]["entry"]) for e in lists) == [3, 10]
    for send, exact in ((lambda: doctor.get(f"List/{lists[0]['resource']['id']}"), BUDGET["read"][0] + 1),
                        (lambda: doctor.get(f"List?patient={pid}"), BUDGET["search"][0] + 1),
                        (lambda: doctor.get(f"List?patient={pid}&_include=List:item"), BUDGET["search"][0] + 2)):
        counts = _cost(database, send)
        assert counts.transactions == 1
        if not database.is_sqlite:
            assert counts.statements == exact, counts
