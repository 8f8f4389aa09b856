"""SMART scopes as a restriction (policy/scopes.py): the parser, what each request needs, and the decision."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fhir_dmp.policy import scopes
from fhir_dmp.policy.scopes import Grant, InvalidScope, needs, parse, refusal


def test_v1_and_v2_resource_scopes_parse_to_their_permissions():
    grants = parse("patient/DocumentReference.read user/*.cruds system/Patient.write patient/*.rs openid "
                   "launch/patient").grants
    assert grants == (
        Grant("patient", "DocumentReference", frozenset("rs")),
        Grant("user", "*", frozenset("cruds")),
        Grant("system", "Patient", frozenset("cud")),
        Grant("patient", "*", frozenset("rs")),
    )
    assert parse("user/Binary.*").grants == (Grant("user", "Binary", frozenset("cruds")),)


@pytest.mark.parametrize("scope", [
    "user/*.dus",  # out of order: undefined (SMART 2.0), granted nothing
    "user/*.rr", "user/*.", "user/*.readwrite", "user/documentreference.rs", "admin/*.rs", "user/*",
    "patient/Observation.rs?category=laboratory",  # narrowed by search parameters: not enforced, so not granted
    "openid", "fhirUser", "launch", "launch/patient", "offline_access",
])
def test_what_is_not_an_enforceable_resource_scope_grants_nothing(scope):
    assert parse(scope).grants == ()


@pytest.mark.parametrize("claim", [["user/*.rs"], {"scope": "user/*.rs"}, 1, None, True,
                                   "user/*.rs  patient/*.rs", " user/*.rs", "user/*.rs\n", "user/*.rs\tx",
                                   "user/\u00e9.rs", "x" * (scopes.MAX_SCOPE_CHARS + 1)])
def test_a_scope_claim_of_another_shape_makes_the_token_invalid(claim):
    with pytest.raises(InvalidScope):
        parse(claim)


def test_an_empty_scope_claim_grants_nothing_and_refuses_everything():
    grants = parse("")
    assert grants.grants == ()
    assert refusal(grants, "patient", needs("DocumentReference", "read")).status == 403


@pytest.mark.parametrize(("rtype", "interaction", "operation", "wanted"), [
    ("DocumentReference", "read", None, (("DocumentReference", "r"),)),
    ("DocumentReference", "vread", None, (("DocumentReference", "r"),)),
    ("DocumentReference", "history-instance", None, (("DocumentReference", "r"),)),
    ("DocumentReference", "search-type", None, (("DocumentReference", "s"),)),
    ("DocumentReference", "history-type", None, (("DocumentReference", "s"),)),
    (None, "history-system", None, (("*", "s"),)),
    ("DocumentReference", "create", None, (("DocumentReference", "c"),)),
    ("DocumentReference", "update", None, (("DocumentReference", "u"),)),
    ("DocumentReference", "patch", None, (("DocumentReference", "u"),)),
    ("DocumentReference", "delete", None, (("DocumentReference", "d"),)),
    ("Patient", "operation", "$everything", (("*", "r"),)),
    ("Patient", "operation", "$close", (("Patient", "u"),)),
    ("CodeSystem", "operation", "$lookup", (("CodeSystem", "r"),)),
    ("Observation", "operation", "$unheard-of", (("Observation", "r"),)),
    (None, "unknown", None, ()),
])
def test_what_each_interaction_needs(rtype, interaction, operation, wanted):
    assert needs(rtype, interaction, operation) == wanted


def test_no_scope_claim_leaves_the_decision_to_the_dmp_rules():
    assert refusal(None, "professional", needs("DocumentReference", "delete")) is None


def test_a_missing_scope_is_a_403_naming_it():
    refused = refusal(parse("user/DocumentReference.rs"), "professional", needs("DocumentReference", "update"))
    assert refused.status == 403
    assert "user/DocumentReference.u" in refused.issues[0].diagnostics
    # RFC 6750 3.1: the challenge says why (insufficient_scope) and which scope the request needs
    assert refused.headers["WWW-Authenticate"] == ('Bearer realm="fhir-dmp", error="insufficient_scope", '
                                                   'scope="user/DocumentReference.u"')


@pytest.mark.parametrize(("actor", "scope", "allowed"), [
    ("system", "system/*.read", True), ("system", "user/*.read", False), ("system", "patient/*.read", False),
    ("professional", "user/*.read", True), ("professional", "system/*.read", False),
    ("professional", "patient/*.read", False),  # no patient launch context in a professional's token
    ("patient", "patient/*.read", True), ("patient", "user/*.read", True), ("patient", "system/*.read", False),
    ("representative", "patient/*.rs", True), ("representative", "system/*.rs", False),
    ("insurer", "user/*.cruds", False),  # a kind without levels: nothing (and refused anyway by the DMP rules)
])
def test_each_caller_kind_uses_its_own_levels_only(actor, scope, allowed):
    assert (refusal(parse(scope), actor, needs("DocumentReference", "read")) is None) is allowed


def test_a_type_scope_does_not_cover_another_type_nor_every_type():
    grants = parse("user/DocumentReference.cruds")
    assert refusal(grants, "professional", needs("Binary", "read")) is not None
    assert refusal(grants, "professional", needs("Patient", "operation", "$everything")) is not None
    assert refusal(grants, "professional", needs(None, "history-system")) is not None
    assert refusal(parse("user/*.rs"), "professional", needs(None, "history-system")) is None


def test_one_missing_need_among_several_refuses():
    grants = parse("user/DocumentReference.rs")
    assert refusal(grants, "professional", [("DocumentReference", "s"), ("Patient", "r")]) is not None
    assert refusal(grants, "professional", [("DocumentReference", "s")]) is None


SPEC = Path(__file__).resolve().parents[1] / "data" / "reference" / "smart-app-launch"


def test_the_shipped_rules_follow_the_smart_pages():
    """data/smart-scopes.json against SMART App Launch 2 (tests/data/reference/smart-app-launch/): every
    capability we advertise is one the Conformance page defines; the v1 suffixes and the permission of each
    interaction are those of the Scopes page."""
    conformance = (SPEC / "conformance.md").read_text(encoding="utf-8")
    defined = set(re.findall(r"^\* `([a-z0-9-]+)`:", conformance, re.MULTILINE))
    assert set(scopes.rules().capabilities) <= defined
    text = (SPEC / "scopes-and-launch-context.md").read_text(encoding="utf-8")
    v1 = dict(re.findall(r"^\* v1 `\.([a-z*]+)` ⇒ v2 `\.([a-z]+)`", text, re.MULTILINE))
    assert v1 == dict(scopes.rules().v1)
    letter = {"create": "c", "read": "r", "vread": "r", "history": None, "update": "u", "patch": "u",
              "delete": "d", "search": "s"}
    for code, interaction in re.findall(r"^\* `([cruds])` for `(\w+)`", text, re.MULTILINE):
        assert letter[interaction] == code
    for permission, lines in re.findall(r"^\* `([cruds])` for `\w+`\n((?:  \* .*\n)+)", text, re.MULTILINE):
        for kind in re.findall(r"^  \* (Instance|Type|System) level \[(\w+)\]", lines, re.MULTILINE):
            interaction = {("Instance", "read"): "read", ("Instance", "vread"): "vread",
                           ("Instance", "history"): "history-instance", ("Instance", "update"): "update",
                           ("Instance", "patch"): "patch", ("Instance", "delete"): "delete",
                           ("Type", "create"): "create", ("Type", "search"): "search-type",
                           ("Type", "history"): "history-type", ("System", "search"): "search-system",
                           ("System", "history"): "history-system"}[kind]
            assert scopes.rules().interactions[interaction] == permission, (kind, permission)


def test_a_conditional_interaction_needs_the_search_of_its_type_and_a_conditional_create_the_read_too():
    assert needs("Patient", "create", conditional=True) == (("Patient", "c"), ("Patient", "r"), ("Patient", "s"))
    assert needs("DocumentReference", "delete", conditional=True) == (("DocumentReference", "d"),
                                                                      ("DocumentReference", "s"))
    assert needs("DocumentReference", "read", conditional=True) == (("DocumentReference", "r"),)
    assert scopes.reaching("chain", ["Patient"]) == [("Patient", "s")]
    assert scopes.reaching("include", ["Patient", "List"]) == [("Patient", "r"), ("List", "r")]
