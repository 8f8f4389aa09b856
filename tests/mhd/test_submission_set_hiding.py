"""A SubmissionSet never tells of a document hidden from its reader (dmp-reference.md 6.8 in the List).

An ITI-65 SubmissionSet (a `List`) names the DocumentReferences it carried in `entry.item`. Shown to a caller who
may not see one of them (habilitation matrix, MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX), the
List must answer exactly as a List that names a document that does not exist, and as one that never named it: no
entry, no search by `item` matching through it, in every interaction that answers a List.

A differential harness, as tests/policy/test_hidden_equals_absent.py: in one DMP, three Lists filed by the system,
each with its own visible anchor document: `hidden` names [anchor, the caller's hidden document], `absent` names
[anchor, an id no resource has], `never` names [anchor]; and two one-item Lists (`solo-hidden`, `solo-absent`).
Every interaction is sent on each, and the answers (status, header names, body with the ids of each world's List,
anchor and target replaced by placeholders) must be alike.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fhirclient import FhirTestClient, json_of
from tests.mhd.helpers import submission_set
from tests.policy.oracles import answer, normalised
from tests.policy.test_access_table import created
from tests.policy.test_hidden_equals_absent import OPENING, World, build, describe, doc_body


@dataclass
class Lists:
    """Per variant (hidden, absent, never, solo-hidden, solo-absent): the List id, its anchor, its target."""

    world: World
    hidden: str  # the caller's hidden DocumentReference
    ids: dict[str, str] = field(default_factory=dict)
    anchors: dict[str, str] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)

    def names(self, variant: str) -> dict[str, str]:
        names = {self.ids[variant]: "<list>", self.targets[variant]: "<target>"}
        if variant in self.anchors:
            names[self.anchors[variant]] = "<anchor>"
        return names


def _list_body(pid: str, items: list[str]) -> dict:
    # identifiers the oracle normalises (urn:oid:1.2.250.1.999.1.1.<n>, urn:uuid), so that the Lists compare
    body = submission_set(pid, items)
    body["identifier"][0]["value"] = f"urn:oid:1.2.250.1.999.1.1.{uuid.uuid4().int}"
    body["date"] = "2026-12-01T10:00:00+01:00"
    return body


def file_lists(world: World, hidden_doc: str) -> Lists:
    client, pid = world.client, world.pid["A"]
    hidden = world.docs[("A", hidden_doc)]["id"]
    lists = Lists(world, hidden)
    absent = str(uuid.uuid4())
    plan = {"hidden": hidden, "absent": absent, "never": hidden, "solo-hidden": hidden, "solo-absent": absent,
            "solo-never": hidden}
    for variant, target in plan.items():
        lists.targets[variant] = target
        items = []
        if not variant.startswith("solo"):
            anchor = created(client.post("DocumentReference", doc_body(pid, "11506-3")), "an anchor")["id"]
            lists.anchors[variant] = anchor
            items.append(f"DocumentReference/{anchor}")
        if variant == "solo-never":  # a SubmissionSet lists at least one document: this one was never filed
            lists.ids[variant] = str(uuid.uuid4())
            continue
        if variant != "never":
            items.append(f"DocumentReference/{target}")
        lists.ids[variant] = created(client.post("List", _list_body(pid, items)), f"the {variant} List")["id"]
    return lists


Send = Callable[[Lists, FhirTestClient, str], Any]
SOLO = ("solo-hidden", "solo-absent", "solo-never")  # one item, hidden or absent; and a List id nothing has


def _batch(lists: Lists, who: FhirTestClient, v: str) -> Any:
    pid, lid, target = lists.world.pid["A"], lists.ids[v], lists.targets[v]
    urls = [f"List/{lid}", f"List/{lid}/_history/1", f"List?_id={lid}&patient={pid}",
            f"List?patient={pid}&item=DocumentReference/{target}"]
    return who.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": url}} for url in urls]})


def _search(query: str) -> Send:
    def send(lists: Lists, who: FhirTestClient, v: str) -> Any:
        return who.get(query.format(pid=lists.world.pid["A"], list=lists.ids[v], target=lists.targets[v],
                                    anchor=lists.anchors.get(v, "")))
    return send


INTERACTIONS: dict[str, tuple[tuple[str, ...], Send]] = {
    # name: (the variants it compares, the request)
    "read": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}")),
    "read-elements": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}?_elements=entry")),
    "read-summary": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}?_summary=false")),
    "read-xml": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}?_format=xml")),
    "vread": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}/_history/1")),
    "history-instance": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}/_history")),
    "search-id": (("hidden", "absent", "never"), _search("List?_id={list}&patient={pid}&_total=accurate")),
    "search-id-elements": (("hidden", "absent", "never"), _search("List?_id={list}&patient={pid}&_elements=entry")),
    "search-id-xml": (("hidden", "absent", "never"), _search("List?_id={list}&patient={pid}&_format=xml")),
    "search-item": (("hidden", "absent", "never"),
                    _search("List?patient={pid}&item=DocumentReference/{target}&_total=accurate")),
    "search-item-id-only": (("hidden", "absent", "never"), _search("List?patient={pid}&item={target}")),
    "search-item-typed": (("hidden", "absent", "never"),
                          _search("List?patient={pid}&item:DocumentReference={target}")),
    "search-item-chain": (("hidden", "absent", "never"),
                          _search("List?patient={pid}&item:DocumentReference._id={target}")),
    "search-item-and-id": (("hidden", "absent", "never"),
                           _search("List?_id={list}&patient={pid}&item=DocumentReference/{target}")),
    "search-not-item": (("hidden", "absent", "never"), _search(
        "List?_id={list}&patient={pid}&item:missing=false&_total=accurate")),
    "search-solo-missing": (SOLO, _search("List?_id={list}&patient={pid}&item:missing=true&_total=accurate")),
    "search-solo-present": (SOLO, _search("List?_id={list}&patient={pid}&item:missing=false&_total=accurate")),
    # a List naming only what the caller may not see is itself absent for them: as a List id nothing has
    "solo-read": (SOLO, lambda ls, w, v: w.get(f"List/{ls.ids[v]}")),
    "solo-vread": (SOLO, lambda ls, w, v: w.get(f"List/{ls.ids[v]}/_history/1")),
    "solo-history": (SOLO, lambda ls, w, v: w.get(f"List/{ls.ids[v]}/_history")),
    "solo-search-id": (SOLO, _search("List?_id={list}&patient={pid}&_total=accurate")),
    "solo-search-item": (SOLO, _search("List?patient={pid}&_id={list}&item={target}")),
    "solo-include": (SOLO, _search("List?_id={list}&patient={pid}&_include=List:item")),
    "solo-batch": (SOLO, _batch),
    "solo-validate": (SOLO, lambda ls, w, v: w.get(f"List/{ls.ids[v]}/$validate")),
    "solo-patch": (SOLO, lambda ls, w, v: w.patch(f"List/{ls.ids[v]}", [
        {"op": "replace", "path": "/title", "value": "Lot relu"}])),
    "solo-delete": (SOLO, lambda ls, w, v: w.delete(f"List/{ls.ids[v]}")),
    "include-item": (("hidden", "absent", "never"), _search(
        "List?_id={list}&patient={pid}&_include=List:item&_total=accurate")),
    "include-item-iterate": (("hidden", "absent", "never"), _search(
        "List?_id={list}&patient={pid}&_include=List:item&_include:iterate=DocumentReference:relatesto")),
    "revinclude-item": (("hidden", "absent", "never"), _search(
        "DocumentReference?_id={anchor}&patient={pid}&_revinclude=List:item")),
    "has-item": (("hidden", "absent", "never"), _search(
        "DocumentReference?_id={anchor}&patient={pid}&_has:List:item:item=DocumentReference/{target}")),
    "patient-has-item": (("hidden", "absent", "never"), _search(
        "Patient?_id={pid}&_has:List:subject:item=DocumentReference/{target}")),
    "batch-get": (("hidden", "absent", "never"), _batch),
    "validate": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}/$validate")),
    # writes, last (each variant's List goes through the same ones): a patch applies to the List as shown, a PUT
    # replaces it; the entries the caller was not shown stay in the store (test_a_change_keeps_what_was_not_shown)
    "patch-test-entry": (("hidden", "absent", "never"), lambda ls, w, v: w.patch(f"List/{ls.ids[v]}", [
        {"op": "test", "path": "/entry/1/item/reference", "value": f"DocumentReference/{ls.targets[v]}"}])),
    "patch-remove-entry": (("hidden", "absent", "never"), lambda ls, w, v: w.patch(f"List/{ls.ids[v]}", [
        {"op": "remove", "path": "/entry/1"}])),
    "patch-title": (("hidden", "absent", "never"), lambda ls, w, v: w.patch(f"List/{ls.ids[v]}", [
        {"op": "replace", "path": "/title", "value": "Lot relu"}])),
    "put-as-shown": (("hidden", "absent", "never"), lambda ls, w, v: _put_as_shown(ls, w, v)),
    "history-after-writes": (("hidden", "absent", "never"), lambda ls, w, v: w.get(f"List/{ls.ids[v]}/_history")),
    "search-item-after-writes": (("hidden", "absent", "never"), _search(
        "List?_id={list}&patient={pid}&item=DocumentReference/{target}")),
}


def _put_as_shown(lists: Lists, who: FhirTestClient, v: str) -> Any:
    """The caller reads the List, changes its title and sends it back (as the system when they may not read it)."""
    read = who.get(f"List/{lists.ids[v]}")
    body = json_of(read if read.status_code == 200 else lists.world.client.get(f"List/{lists.ids[v]}"))
    body.pop("meta", None)
    return who.put(f"List/{lists.ids[v]}", {**body, "title": "Lot relu deux fois"})


def _differences(lists: Lists, who: FhirTestClient) -> list[str]:
    failures = []
    for name, (variants, send) in INTERACTIONS.items():
        first = variants[0]
        expected = send(lists, who, first)
        want = answer(expected, lists.names(first))
        want_text = normalised(expected.get_data(as_text=True), lists.names(first))
        for other in variants[1:]:
            got = send(lists, who, other)
            seen = answer(got, lists.names(other))
            if seen != want:
                failures.append(f"{name}: {first} {describe(want)}\n    {other} {describe(seen)}")
            elif normalised(got.get_data(as_text=True), lists.names(other)) != want_text:
                failures.append(f"{name}: {first} and {other} differ in their bytes")
    return failures


@pytest.mark.parametrize("kind", list(OPENING))
def test_a_list_naming_a_hidden_document_answers_as_one_naming_an_absent_one_or_none(client, kind: str) -> None:
    world = build(client)
    caller = OPENING[kind]
    lists = file_lists(world, caller.hidden)
    who = world.as_(caller.claims)
    assert who.get(f"DocumentReference/{lists.hidden}").status_code == 404  # hidden from them
    assert who.get(f"List/{lists.ids['hidden']}").status_code == 200  # the List is theirs to read
    failures = _differences(lists, who)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", list(OPENING))
def test_no_answer_naming_lists_gives_the_hidden_id(client, kind: str) -> None:
    """The answers that show several Lists at once ($everything, a search by patient, the List history, the
    system history of a patient's DMP) never name the hidden document in a List."""
    world = build(client)
    caller = OPENING[kind]
    lists = file_lists(world, caller.hidden)
    who = world.as_(caller.claims)
    pid = world.pid["A"]
    failures = []
    for url in (f"Patient/{pid}/$everything?_count=1000", f"Patient/{pid}/$everything?_type=List",
                f"List?patient={pid}&_count=1000", f"List?patient={pid}&code=submissionset&_format=xml",
                f"List?subject=Patient/{pid}&_count=1000&_elements=entry", "List/_history?_count=1000",
                "_history?_count=1000"):
        response = who.get(url)
        if response.status_code != 200:
            continue  # history across DMPs: a professional names no DMP there, no List answered
        found = _lists_in(response)
        if "_history" not in url:
            assert found, url
        if any(lists.hidden in text for text in found):
            failures.append(f"{url}: a List names the hidden {lists.hidden}")
    assert not failures, "\n".join(failures)


def _lists_in(response: Any) -> list[str]:
    text = response.get_data(as_text=True)
    if text.lstrip().startswith("<"):
        return [part.split("</List>")[0] for part in re.split(r"<List[ >]", text)[1:]]
    body = json_of(response)
    return [str(e["resource"]) for e in body.get("entry", []) if e.get("resource", {}).get("resourceType") == "List"]


def test_the_system_and_the_depositor_still_see_every_entry(client) -> None:
    """Nothing is removed from the store, nor from what a caller who sees the document gets."""
    world = build(client)
    lists = file_lists(world, "masked")
    for who in (client, world.as_({"actor": "professional", "sub": "810000000102", "profession": "10"})):
        shown = json_of(who.get(f"List/{lists.ids['hidden']}"))
        assert [e["item"]["reference"] for e in shown["entry"]] == [
            f"DocumentReference/{lists.anchors['hidden']}", f"DocumentReference/{lists.hidden}"]
        found = json_of(who.get(f"List?patient={world.pid['A']}&item=DocumentReference/{lists.hidden}"))
        assert {e["resource"]["id"] for e in found["entry"]} == {lists.ids["hidden"], lists.ids["solo-hidden"]}
    # the entry naming an absent document stays for the system (nothing is hidden from it)
    shown = json_of(client.get(f"List/{lists.ids['absent']}"))
    assert len(shown["entry"]) == 2


def test_the_harness_tells_a_visible_entry_from_an_absent_one(client) -> None:
    """The control: the same comparison for a caller who sees the document finds the differences it must."""
    world = build(client)
    lists = file_lists(world, "masked")
    treating = world.as_({"actor": "professional", "sub": "810000000102", "profession": "10"})
    failing = {f.split(":")[0] for f in _differences(lists, treating)}
    assert {"read", "vread", "history-instance", "search-id", "search-item", "include-item", "revinclude-item",
            "batch-get", "search-solo-present", "solo-read", "solo-search-id", "solo-patch"} <= failing


@pytest.mark.parametrize("kind", ["patient-invisible", "representative-invisible"])
def test_a_change_keeps_what_was_not_shown(client, kind: str) -> None:
    """A patient (or representative) who patches or replaces a List changes what they see of it: the entry naming
    the document invisible to them stays in the store, and they are still not shown it."""
    world = build(client)
    caller = OPENING[kind]
    lists = file_lists(world, caller.hidden)
    who = world.as_(caller.claims)
    lid = lists.ids["hidden"]
    assert who.patch(f"List/{lid}", [{"op": "replace", "path": "/title", "value": "Lot relu"}]).status_code == 200
    response = _put_as_shown(lists, who, "hidden")
    assert response.status_code == 200, response.data
    assert lists.hidden not in response.get_data(as_text=True)
    stored = json_of(client.get(f"List/{lid}"))
    assert stored["title"] == "Lot relu deux fois" and stored["meta"]["versionId"] == "3"
    assert [e["item"]["reference"] for e in stored["entry"]] == [
        f"DocumentReference/{lists.anchors['hidden']}", f"DocumentReference/{lists.hidden}"]
    # what they send naming the hidden document themselves is not doubled, and still not shown
    body = {**json_of(who.get(f"List/{lid}")), "entry": [{"item": {"reference": f"DocumentReference/{lists.hidden}"}}]}
    body.pop("meta")
    answered = who.put(f"List/{lid}", body)
    assert answered.status_code == 200, answered.data
    assert "entry" not in json_of(answered)
    assert [e["item"]["reference"] for e in json_of(client.get(f"List/{lid}"))["entry"]] == [
        f"DocumentReference/{lists.hidden}"]


def test_a_subscribers_notifications_show_the_list_as_they_may_see_it(database) -> None:
    """DSUBm on SubmissionSets, `full-resource`: the List in a notification (and in `$events`) is the List the
    subscriber would read; a filter on `item` hears of a List only through a document they see."""
    from tests.fhirclient import document
    from tests.mhd.helpers import iti65
    from tests.receiver import Receiver
    from tests.services import subscribing

    world = subscribing.world.__wrapped__(database)  # type: ignore[attr-defined]
    with Receiver() as receiver:
        sid = world.subscribe(subscribing.KINE, receiver.url, f"List?patient=Patient/{world.pid}",
                              topic=subscribing.SS_TOPIC, content="full-resource")
        world.deliver()
        biology = document(world.pid, type={"coding": [{"system": "http://loinc.org", "code": "11502-2"}]})
        followup = document(world.pid, type={"coding": [{"system": "http://loinc.org", "code": "11506-3"}]})
        filed = json_of(world.client.post("/fhir", iti65(world.pid, [(biology, b"bio"), (followup, b"suivi")])))
        ids = ["/".join(e["response"]["location"].split("/_history/")[0].split("/")[-2:]) for e in filed["entry"]]
        [hidden] = [i.split("/")[1] for i in ids if i.startswith("DocumentReference/")
                    and world.as_(subscribing.KINE).get(i).status_code == 404]
        world.deliver_until(lambda: bool(receiver.events()))
        replayed = world.as_(subscribing.KINE).get(f"Subscription/{sid}/$events?content=full-resource")
        assert replayed.status_code == 200, replayed.data
        for text in (str(receiver.received), replayed.get_data(as_text=True)):
            assert "submissionset" in text and hidden not in text
