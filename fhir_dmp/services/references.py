"""Which DMP a resource belongs to: its reference to the Patient must resolve here (422 otherwise)."""

from __future__ import annotations

from collections.abc import Mapping

from fhir_dmp.errors import unprocessable
from fhir_dmp.policy.consents import INS_SYSTEMS
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import queries, resources
from fhir_dmp.storage.records import SYSTEM_SCOPE

__all__ = ["INS_SYSTEMS", "local_id", "patient_key"]


def local_id(reference: str, resource_type: str, base_url: str) -> str | None:
    """`Type/id`, `Type/id/_history/n` or `<our base>/Type/id` -> id; anything else -> None."""
    ref = reference
    if ref.startswith(base_url.rstrip("/") + "/"):
        ref = ref[len(base_url.rstrip("/")) + 1:]
    ref = ref.split("/_history/")[0]
    prefix = resource_type + "/"
    if ref.startswith(prefix) and "/" not in ref[len(prefix):] and ref[len(prefix):]:
        return ref[len(prefix):]
    return None


def patient_key(u: Unit, resource_type: str, resource: dict, rid: str,
                pending: Mapping[tuple[str, str], str]) -> str:
    """The Patient id of the DMP this resource belongs to ('' if none); 422 on a dangling patient. The DMP's
    facts come with it (one statement), for the decision that follows.

    `pending`: resources created earlier in the same transaction, not yet written ((type, id) -> patient key).
    """
    if resource_type == "Patient":
        return rid
    if resource_type == "Binary":
        return _binary_patient(u, resource, pending)
    definition = RESOURCES.get(resource_type)
    for path in definition.patient_paths if definition else ():
        ref = resource.get(path)
        if isinstance(ref, dict):
            found = _resolve_patient(u, ref, f"{resource_type}.{path}", pending)
            if found is not None:
                return found
    return ""


def _resolve_patient(u: Unit, ref: dict, expression: str, pending: Mapping[tuple[str, str], str]) -> str | None:
    literal = ref.get("reference")
    if isinstance(literal, str):
        pid = local_id(literal, "Patient", u.req.base_url)
        if pid is None:
            if literal.startswith("Patient/") or "/Patient/" in literal or ref.get("type") == "Patient":
                raise unprocessable(f"Reference {literal!r} does not name a DMP on this server", expression)
            return None  # not a patient reference (e.g. a Group or a Device)
        if ("Patient", pid) in pending or pid in u.existing_dmps:  # each DMP looked up once per unit of work
            return pid
        located = resources.locate(u.tx, "Patient", pid)
        if located is None or located.deleted:
            raise unprocessable(f"Reference {literal!r}: no such DMP (Patient) on this server", expression)
        u.know_facts(pid, located.dmp_facts)
        u.existing_dmps.add(pid)
        return pid
    ident = ref.get("identifier")
    if isinstance(ident, dict) and ident.get("system") in INS_SYSTEMS and isinstance(ident.get("value"), str):
        known = u.found_ins.get((ident["system"], ident["value"]))
        if known is not None and known not in u.changed_dmps:  # each INS looked up once per unit of work
            return known
        token = c.Token("identifier", ident["system"], ident["value"])
        matches = queries.find(u.tx, "Patient", token, limit=2, scope=SYSTEM_SCOPE)
        if len(matches) != 1:
            raise unprocessable(f"No single DMP has the INS {ident['system']}|{ident['value']}", expression)
        u.found_ins[(ident["system"], ident["value"])] = matches[0].id
        return matches[0].id
    if ref.get("type") == "Patient":
        raise unprocessable("A reference to the patient needs a 'reference' or an INS 'identifier'", expression)
    return None


def _binary_patient(u: Unit, resource: dict, pending: Mapping[tuple[str, str], str]) -> str:
    ctx = resource.get("securityContext")
    literal = ctx.get("reference") if isinstance(ctx, dict) else None
    if not isinstance(literal, str):
        return ""
    doc_id = local_id(literal, "DocumentReference", u.req.base_url)
    if doc_id and ("DocumentReference", doc_id) in pending:
        return pending[("DocumentReference", doc_id)]
    located = resources.locate(u.tx, "DocumentReference", doc_id) if doc_id else None
    if located is None:
        return ""
    u.know_facts(located.patient_key, located.dmp_facts)
    return located.patient_key
