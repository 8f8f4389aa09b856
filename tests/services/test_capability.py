"""The CapabilityStatement is exact (services/capability.py): a walk over it checks every declared interaction,
search parameter, include, revinclude and operation against the running server, and that three undeclared
ones of each kind are refused cleanly (a 4xx OperationOutcome). Also `mode=terminology` and the served
OperationDefinitions."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from fhir_dmp.search.definitions import definition
from tests.fhirclient import document, json_of, patient
from tests.http.helpers import new_patient, outcome

STRICT = {"Prefer": "handling=strict"}
G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
SAMPLE = {"token": "http://example.org|1", "date": "ge2020-01-01", "string": "abc", "uri": "http://example.org/x",
          "number": "1", "quantity": "1"}


def _statement(client) -> dict:  # type: ignore[no-untyped-def]
    response = client.get("metadata", auth=False)
    assert response.status_code == 200, response.data
    return json_of(response)


def _resources(client) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {r["type"]: r for r in _statement(client)["rest"][0]["resource"]}


def _refused_by_routes(response) -> bool:  # type: ignore[no-untyped-def]
    """The answer of a route the server does not have (an interaction or operation it does not declare)."""
    if response.status_code not in (400, 404, 405):
        return False
    issues = json_of(response).get("issue", [])
    return any(i.get("code") == "not-supported" and "not supported" in i.get("diagnostics", "") for i in issues)


def _interaction(client, rtype: str, code: str, rid: str):  # type: ignore[no-untyped-def]
    body = {"resourceType": rtype, "id": rid}
    return {
        "read": lambda: client.get(f"{rtype}/{rid}"),
        "vread": lambda: client.get(f"{rtype}/{rid}/_history/1"),
        "update": lambda: client.put(f"{rtype}/{rid}", body),
        "patch": lambda: client.patch(f"{rtype}/{rid}", [{"op": "test", "path": "/id", "value": rid}]),
        "delete": lambda: client.delete(f"{rtype}/no-such-{rtype}"),
        "history-instance": lambda: client.get(f"{rtype}/{rid}/_history"),
        "history-type": lambda: client.get(f"{rtype}/_history"),
        "create": lambda: client.post(rtype, {"resourceType": rtype}),
        "search-type": lambda: client.get(rtype, headers=STRICT),
    }[code]()


def test_every_declared_interaction_is_served_and_undeclared_ones_are_refused(client):
    pid = new_patient(client)
    ids = {"Patient": pid, "DocumentReference": json_of(client.post("DocumentReference", document(pid)))["id"],
           "CodeSystem": "TRE-G15-ProfessionSante"}
    for rtype, resource in _resources(client).items():
        rid = ids.get(rtype, "x")
        for code in (i["code"] for i in resource["interaction"]):
            response = _interaction(client, rtype, code, rid)
            assert response.status_code < 500 and not _refused_by_routes(response), (rtype, code, response.data)
            if rtype in ids and code in ("read", "search-type", "history-type"):
                assert response.status_code == 200, (rtype, code, response.data)
    for rtype, code in (("AuditEvent", "create"), ("AuditEvent", "delete"), ("CodeSystem", "update"),
                        ("StructureDefinition", "history-type"), ("OperationDefinition", "create")):
        assert code not in {i["code"] for i in _resources(client)[rtype]["interaction"]}
        response = _interaction(client, rtype, code, ids.get(rtype, "x"))
        outcome(response, 405)


def _sample(rtype: str, param: dict) -> str | None:
    if param["name"] == "_id":
        return "abc"
    if param["type"] == "reference":
        targets = definition(rtype, param["name"]).get("target") or ["Patient"]
        return f"{'Patient' if 'Patient' in targets else targets[0]}/abc"
    return SAMPLE.get(param["type"])


def test_every_declared_parameter_include_and_revinclude_is_taken(client):
    for rtype, resource in _resources(client).items():
        for param in resource["searchParam"]:
            sample = _sample(rtype, param)
            if sample is None:  # a composite or special value: test_negotiation walks their definitions
                continue
            response = client.get(f"{rtype}?{param['name']}={quote(sample)}", headers=STRICT)
            if response.status_code == 400:  # a value this sample does not fit (a boolean token): not "unknown"
                assert "not-supported" not in [i["code"] for i in json_of(response)["issue"]], (rtype, param)
            else:
                assert response.status_code == 200, (rtype, param, response.data)
        for kind in ("searchInclude", "searchRevInclude"):
            name = "_include" if kind == "searchInclude" else "_revinclude"
            for value in resource.get(kind, ()):
                response = client.get(f"{rtype}?{name}={quote(value)}", headers=STRICT)
                assert response.status_code == 200, (rtype, name, value, response.data)


def test_includes_are_declared_from_the_search_engine_and_work(client):
    resources = _resources(client)
    assert "DocumentReference:patient" in resources["DocumentReference"]["searchInclude"]
    assert "DocumentReference:*" in resources["DocumentReference"]["searchInclude"]
    assert "DocumentReference:patient" in resources["Patient"]["searchRevInclude"]
    assert "List:item" in resources["DocumentReference"]["searchRevInclude"]
    assert "searchInclude" not in resources["Binary"] and "searchInclude" not in resources["CodeSystem"]
    pid = new_patient(client)
    client.post("DocumentReference", document(pid))
    found = json_of(client.get(f"Patient?_id={pid}&_revinclude=DocumentReference:patient"))
    assert sorted(e["resource"]["resourceType"] for e in found["entry"]) == ["DocumentReference", "Patient"]


@pytest.mark.parametrize("query", [
    "Patient?nonsense=1", "DocumentReference?_text=x", "Patient?age=5",  # parameters
    "Patient?_include=Patient:subject", "DocumentReference?_include=DocumentReference:nothing",
    "Binary?_include=Binary:patient",  # includes
    "Patient?_revinclude=DocumentReference:nothing", "Patient?_revinclude=Basic:subject",
    "Patient?_revinclude=Patient",  # revincludes
])
def test_undeclared_parameters_and_includes_are_refused_cleanly(client, query):
    rtype, _, rest = query.partition("?")
    name, _, value = rest.partition("=")
    resource = _resources(client)[rtype]
    assert name not in {p["name"] for p in resource["searchParam"]}
    assert value not in resource.get("searchInclude", []) + resource.get("searchRevInclude", [])
    outcome(client.get(query, headers=STRICT), 400)


def _invocations(pid: str) -> dict[tuple[str, str], tuple[str, str, object, int]]:
    """A real call of each declared operation, and the status it gets from a system caller."""
    params = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "décès"}]}
    return {
        ("Patient", "validate"): ("POST", "Patient/$validate", patient(), 200),
        ("DocumentReference", "validate"): ("POST", "DocumentReference/$validate", document(pid), 200),
        ("Patient", "everything"): ("GET", f"Patient/{pid}/$everything", None, 200),
        ("Patient", "close"): ("POST", f"Patient/{pid}/$close", params, 200),
        ("Patient", "reopen"): ("POST", f"Patient/{pid}/$reopen", {"resourceType": "Parameters"}, 200),
        ("CodeSystem", "lookup"): ("GET", f"CodeSystem/$lookup?system={quote(G15)}&code=10", None, 200),
        ("ValueSet", "expand"): ("GET", "ValueSet/JDV-J57-ClassCode-DMP/$expand", None, 200),
    }


def test_every_declared_operation_has_its_definition_served_and_runs(client):
    pid = new_patient(client)
    calls = _invocations(pid)
    for rtype, resource in _resources(client).items():
        for op in resource.get("operation", ()):
            found = json_of(client.get(f"OperationDefinition?url={quote(op['definition'])}"))
            assert found["total"] == 1, (rtype, op)
            defined = found["entry"][0]["resource"]
            assert json_of(client.get(f"OperationDefinition/{defined['id']}")) == defined
            assert defined["code"] == op["name"] and (rtype in defined["resource"] or "Resource" in
                                                      defined["resource"]), (rtype, op)
            if op["name"] == "validate":
                calls.setdefault((rtype, "validate"), ("POST", f"{rtype}/$validate", {"resourceType": rtype}, 200))
            method, path, body, status = calls.get((rtype, op["name"]), (
                "POST" if defined.get("affectsState") else "GET",
                f"{rtype}/{'x/' if defined['instance'] and not defined['type'] else ''}${op['name']}", None, 0))
            response = client.request(method, path, body)
            assert response.status_code < 500 and not _refused_by_routes(response), (rtype, op, response.data)
            if status:
                assert response.status_code == status, (rtype, op, response.data)


@pytest.mark.parametrize("path", ["Patient/$nope", "DocumentReference/$everything", "CodeSystem/$expand"])
def test_undeclared_operations_are_refused_cleanly(client, path):
    rtype, _, name = path.partition("/$")
    assert name not in {o["name"] for o in _resources(client)[rtype].get("operation", ())}
    response = client.post(path, {"resourceType": "Parameters"})
    # no method would do: a 400 naming what the type offers, not a 405 (whose Allow would name methods)
    outcome(response, 400, "not-supported")
    assert "Allow" not in response.headers


def test_metadata_in_terminology_mode_is_a_terminology_capabilities(client):
    response = client.get("metadata?mode=terminology", auth=False)
    assert response.status_code == 200, response.data
    caps = json_of(response)
    assert caps["resourceType"] == "TerminologyCapabilities" and caps["kind"] == "instance"
    shipped = json_of(client.get("CodeSystem?_count=1000"))
    assert sorted(c["uri"] for c in caps["codeSystem"]) == sorted(e["resource"]["url"] for e in shipped["entry"])
    assert G15 in {c["uri"] for c in caps["codeSystem"]}
    value_sets = json_of(client.get("ValueSet?_count=1000"))["entry"]
    assert all(e["resource"]["url"] in caps["description"] for e in value_sets)
    assert {"filter", "count", "offset"} <= {p["name"] for p in caps["expansion"]["parameter"]}
    assert _statement(client)["resourceType"] == "CapabilityStatement"
    assert json_of(client.get("metadata?mode=full", auth=False))["resourceType"] == "CapabilityStatement"
    outcome(client.get("metadata?mode=everything", auth=False), 400)
