"""policy/lists.py: what a List shows of the resources it names, and the search terms confined with it."""

from __future__ import annotations

from fhir_dmp.policy import lists
from fhir_dmp.policy.access import SYSTEM_SCOPE, confine
from fhir_dmp.policy.caller import Caller
from fhir_dmp.storage import criteria as c

BASE = "https://dmp.example.org/fhir"
SCOPE = c.AllOf((c.PatientIs("A"), c.LabelsClear(1)))


def _list(*refs: object) -> dict:
    return {"resourceType": "List", "status": "current", "entry": [
        {"item": {"reference": r}} if isinstance(r, str) else r for r in refs]}


def test_named_reads_local_references_as_the_search_index_does() -> None:
    resource = _list("DocumentReference/a", f"{BASE}/DocumentReference/b/_history/2", "urn:uuid:x",
                     "https://elsewhere.org/fhir/DocumentReference/c", {"item": {"identifier": {"value": "d"}}},
                     "not a reference", "#contained", "x")
    assert lists.named(resource, BASE) == [("DocumentReference", "a"), ("DocumentReference", "b"), None, None, None,
                                           None, None, None]
    assert lists.named({"resourceType": "List"}, BASE) == []


def test_shown_leaves_out_what_is_not_visible_and_keeps_the_rest_in_order() -> None:
    resource = _list("DocumentReference/a", "DocumentReference/h", "urn:uuid:x", "DocumentReference/b")
    keys = lists.named(resource, BASE)
    visible = {("DocumentReference", "a"), ("DocumentReference", "b")}
    shown = lists.shown(resource, keys, visible)
    assert [e["item"]["reference"] for e in shown["entry"]] == ["DocumentReference/a", "urn:uuid:x",
                                                                 "DocumentReference/b"]
    assert lists.left_out(resource, keys, visible) == [{"item": {"reference": "DocumentReference/h"}}]
    assert resource["entry"][1]["item"]["reference"] == "DocumentReference/h"  # the stored one untouched
    only_hidden = _list("DocumentReference/h")
    assert "entry" not in lists.shown(only_hidden, lists.named(only_hidden, BASE), visible)
    assert lists.shown(resource, keys, visible | {("DocumentReference", "h")}) is resource


def test_with_left_out_keeps_what_the_caller_was_not_shown_once() -> None:
    kept = [{"item": {"reference": "DocumentReference/h"}}]
    after = _list("DocumentReference/a")
    assert [e["item"]["reference"] for e in lists.with_left_out(after, kept, BASE)["entry"]] == [
        "DocumentReference/a", "DocumentReference/h"]
    naming_it = _list("DocumentReference/h")
    assert lists.with_left_out(naming_it, kept, BASE) is naming_it
    assert lists.with_left_out({"resourceType": "List"}, kept, BASE)["entry"] == kept


def test_item_terms_are_confined_to_the_scope_in_every_position() -> None:
    item = c.Reference("item", "DocumentReference", "h")
    confined = c.Reference("item", "DocumentReference", "h", None, SCOPE)
    assert confine(item, SCOPE, "List") == confined
    assert confine(item, SCOPE, "DocumentReference") == item  # no such parameter elsewhere: as it is
    assert confine(c.Reference("item", url="https://x.org/a"), SCOPE, "List") == c.Reference("item", url="https://x.org/a")
    assert confine(item, SYSTEM_SCOPE, "List") == item  # a system caller: the List as stored
    assert confine(c.Missing("item", "reference", True), SCOPE, "List") == c.Not(c.Reference("item", within=SCOPE))
    assert confine(c.Missing("item", "reference", False), SCOPE, "List") == c.Reference("item", within=SCOPE)
    has = confine(c.Has("List", "item", item), SCOPE, "DocumentReference")
    assert isinstance(has, c.Has) and confined in c.conjuncts(has.inner)
    branch = c.AllOf((c.TypeIs(("List",)), item))
    chained = confine(c.Chain("subject", ("List", "Patient"), c.AnyOf((branch,))), SCOPE, "Patient")
    assert repr(confined) in repr(chained)  # the chain's List branch is on List: its item term confined


def test_only_non_system_callers_are_shown_lists_shaped() -> None:
    system = Caller(actor="system", sub="feed")
    patient = Caller(actor="patient", sub="1800175123456", patient="1800175123456")
    assert not lists.shaped(system, "List") and lists.shaped(patient, "List")
    assert not lists.shaped(patient, "DocumentReference")
