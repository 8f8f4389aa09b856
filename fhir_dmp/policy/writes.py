"""Who may write what (dmp-reference.md 4 to 6): creates, changes and deletes, after the read rules.

A change is first a read: the caller must see the resource (else 404) in a DMP they may open (else 403);
these rules then say whether their role lets them change it (403) or whether the change itself breaks a
rule of the DMP (422: blocking the médecin traitant).
"""

from __future__ import annotations

import json
import unicodedata

from fhir_dmp.errors import FhirError, forbidden, unprocessable
from fhir_dmp.policy import documents, labels, lifecycle
from fhir_dmp.policy.access import PUBLIC_TYPES, Access
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import Dmp, terms_of
from fhir_dmp.policy.facts import DOCUMENT_TYPES, SUMMARY_TYPES, VSM_TYPE, owner_key
from fhir_dmp.policy.habilitation import LOINC
from fhir_dmp.terminology.classes import codings, declared_classes

SERVER_ONLY = frozenset({"AuditEvent", "Communication"})  # traces and notifications are the server's
PATIENT_CLASS = "90"  # documents a patient files: class 90, déposé par le patient
MEDECIN = "10"  # TRE_G15: the VSM's only authors, with system feeds (dmp-reference.md 8)
VSM_PARTS = frozenset({"Composition", *SUMMARY_TYPES})  # the VSM and its section entries
INS_PREFIX = "urn:oid:1.2.250.1.213.1.4."  # INS-NIR .8, INS-NIA .9, test .10, demo .11 (dmp-reference.md 3)


def as_deposited(caller: Caller, resource_type: str, body: dict) -> dict:
    """6.7: what a minor writes over a secret connection is invisible to their legal representatives."""
    if caller.secret and resource_type in DOCUMENT_TYPES:
        return labels.add_label(resource_type, body, "INVISIBLE_REPRESENTANTS_LEGAUX")
    return body


def authorised_by_creating(caller: Caller, resource_type: str) -> bool:
    """6.3: the professional who creates a DMP (with the patient's agreement) is thereby authorised on it."""
    return resource_type == "Patient" and caller.actor == "professional"


def is_vsm_part(resource_type: str, body: dict) -> bool:
    """The VSM (a Composition: the only Composition the DMP holds), its section entries, or a
    DocumentReference of type 60591-5 (the VSM filed as a document, by the server or in another form)."""
    if resource_type in VSM_PARTS:
        return True
    return resource_type == "DocumentReference" and any(
        c.get("system") == LOINC and c.get("code") == VSM_TYPE for c in codings(body.get("type")))


def vsm_author_refusal(caller: Caller, resource_type: str, body: dict) -> FhirError | None:
    """8: the VSM is written by a médecin. Other professionals, patients and representatives read it (as
    the matrix and labels allow) but never write it, nor its entries; system feeds (migrations) may."""
    if caller.is_system or not is_vsm_part(resource_type, body):
        return None
    if caller.actor == "professional" and caller.profession == MEDECIN:
        return None
    return forbidden(f"The VSM (synthèse médicale, 60591-5) and its entries are written by a médecin "
                     f"(profession 10): you may not write this {resource_type}")


def create_refusal(caller: Caller, resource_type: str, body: dict, dmp: Dmp | None) -> FhirError | None:
    """Creating `body` in `dmp` (None: a resource outside any DMP); feeding itself is judged by
    `access.feeding_refusal`."""
    if caller.is_system:
        return None
    if resource_type in SERVER_ONLY:
        return forbidden(f"{resource_type} resources are written by the server only")
    refusal = vsm_author_refusal(caller, resource_type, body)
    if refusal is not None:
        return refusal
    patientish = caller.actor in ("patient", "representative")
    if dmp is None and resource_type == "Consent":  # in a DMP opened earlier in the same transaction
        return consent_refusal(caller, body, Dmp("", True, frozenset(), frozenset()))
    if dmp is None:
        if resource_type == "Patient" and patientish and caller.patient not in _ins_values(body):
            return forbidden("A patient may only open their own DMP (the token's INS)")
        if patientish and resource_type in PUBLIC_TYPES:
            return forbidden(f"Patients do not maintain the {resource_type} directory")
        return None
    if resource_type == "Consent":
        return consent_refusal(caller, body, dmp)
    if patientish and resource_type == "DocumentReference" and PATIENT_CLASS not in declared_classes(body):
        return forbidden("A patient or representative files documents of class 90 (déposé par le patient) only")
    return None


def consent_refusal(caller: Caller, body: dict, dmp: Dmp) -> FhirError | None:
    """Patients and representatives record any choice but blocking the médecin traitant (422); a professional
    records only their own authorisation, given by the patient at consultation."""
    terms = terms_of(body, None)
    if terms is not None and terms.is_block and terms.actors & dmp.treating:
        return unprocessable("The médecin traitant cannot be blocked: the patient changes médecin traitant first",
                             "Consent.provision.actor")
    if caller.is_system or caller.actor in ("patient", "representative"):
        return None
    if terms is None or not terms.is_authorisation or terms.actors != {caller.sub}:
        return forbidden("A professional may only record their own authorisation (Consent permit naming them, "
                         "purpose TREAT); blocks, oppositions and grants are the patient's")
    return None


def change_refusal(caller: Caller, access: Access | None, resource_type: str, owner: str, before: dict,
                   after: dict | None, dmp: Dmp | None) -> FhirError | None:
    """Updating (`after`) or deleting (`after` None) a resource the caller can see; `access` None: a
    resource outside any DMP."""
    if caller.is_system:
        return None
    if resource_type in SERVER_ONLY:
        return forbidden(f"{resource_type} resources are written by the server only")
    mine = owner == owner_key(caller)
    if access is None:
        if mine or (resource_type in PUBLIC_TYPES and caller.actor == "professional"):
            return None
        return forbidden(f"Only whoever filed this {resource_type} may change it")
    if caller.actor in ("patient", "representative"):
        if access.kind not in ("patient", "representative"):
            return forbidden("Patients change only their own DMP")
        if resource_type == "Patient" and after is not None:  # 9: closing and reopening are $close and $reopen
            refusal = ins_change_refusal(caller, before, after) or lifecycle.closure_edit_refusal(before, after)
            if refusal is not None:
                return refusal
        if after is not None and resource_type in VSM_PARTS:
            return forbidden("The VSM is the médecin's: a patient may delete it, or mask it through its "
                             "DocumentReference's securityLabel, not rewrite it")
        if resource_type == "Consent" and after is not None and dmp is not None:
            return consent_refusal(caller, after, dmp)
        if resource_type == "DocumentReference" and after is not None:
            return documents.change_refusal(caller, mine, before, after)
        return None
    # professionals
    if not access.is_open:
        return access.refusal or forbidden("You may not change this DMP")
    if resource_type == "Patient":
        if after is None:
            return forbidden("A DMP is closed, never deleted, and only at the patient's request")
        refusal = ins_change_refusal(caller, before, after)
        if refusal is not None:
            return refusal
        for element in ("active", "generalPractitioner"):
            if before.get(element) != after.get(element):
                return forbidden(f"Patient.{element} is the patient's choice: a professional may not change it")
        return None
    if not mine:
        what = "document" if resource_type in DOCUMENT_TYPES else resource_type
        return forbidden(f"Only the professional who deposited this {what}, or the patient, may change it")
    if after is not None:
        refusal = vsm_author_refusal(caller, resource_type, after)  # a changed type can make it a VSM
        if refusal is not None:
            return refusal
    if resource_type == "Consent" and after is not None and dmp is not None:
        return consent_refusal(caller, after, dmp)
    if resource_type == "DocumentReference" and after is not None:
        return documents.change_refusal(caller, mine, before, after)
    return None


def _ins_values(patient: dict) -> set[str]:
    idents = patient.get("identifier") if isinstance(patient.get("identifier"), list) else []
    return {i.get("value") for i in idents if isinstance(i, dict) and isinstance(i.get("value"), str)}


def ins_change_refusal(caller: Caller, before: dict, after: dict) -> FhirError | None:
    """4: the INS ties the DMP to its patient (their token's `patient` claim finds it, one DMP per INS), so it
    changes only by the patient, their representative or a system, traced like every write. A professional's
    update touching an INS identifier (adding, removing, or changing any element of one) is refused (403:
    the change is one the patient could make, it is the caller's role that may not; as for `active`).
    The patient or representative must leave the INS their token acts for on the DMP: removing it would hand
    the DMP to whatever INS remains and lock them out (replacing their INS is the identity feed's: a system)."""
    if caller.is_system or ins_identifiers(before) == ins_identifiers(after):
        return None
    if caller.actor in ("patient", "representative"):
        kept = {i.get("value") for i in _identifiers(after) if _system(i).startswith(INS_PREFIX)}  # as Dmp.ins
        if caller.patient in kept:
            return None
        return unprocessable("The DMP must keep the INS your token acts for; a new INS replacing it is recorded "
                             "by the identity feed (a system caller)", "Patient.identifier")
    return forbidden("The INS (Patient.identifier, systems urn:oid:1.2.250.1.213.1.4.*) ties the DMP to its patient: "
                     "only the patient, their representative or a system may change it, not a professional")


def ins_identifiers(patient: dict) -> list[str]:
    """The Patient's INS identifiers, whole and in a canonical order (any element of one counts: `use` old
    deactivates an INS, `period` ends it), so that reordering them is no change and anything else is."""
    return sorted(json.dumps(i, sort_keys=True, ensure_ascii=True) for i in _identifiers(patient) if _is_ins(i))


def _identifiers(patient: dict) -> list[dict]:
    idents = patient.get("identifier")
    return [i for i in idents if isinstance(i, dict)] if isinstance(idents, list) else []


def _system(identifier: dict) -> str:
    system = identifier.get("system")
    return system if isinstance(system, str) else ""


def _is_ins(identifier: dict) -> bool:
    """An INS system, also under a spelling a lax reader would take for one (case, spaces, look-alike digits):
    the wider reading only widens what a professional may not touch."""
    folded = unicodedata.normalize("NFKC", _system(identifier)).casefold().strip()
    return folded.startswith(INS_PREFIX)

