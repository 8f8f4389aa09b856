"""The resource types this server serves and what it does with each: the one source of truth for
dispatch (a refused interaction is a 405) and for the CapabilityStatement."""

from __future__ import annotations

from dataclasses import dataclass

READ_ONLY = ("read", "vread", "search-type", "history-instance", "history-type")
SHIPPED = ("read", "search-type")
FULL = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
        "search-type")


@dataclass(frozen=True)
class ResourceDef:
    name: str
    interactions: tuple[str, ...]
    patient_paths: tuple[str, ...] = ()  # elements that reference the DMP (Patient) it belongs to
    documentation: str = ""
    shipped: bool = False  # served read-only from the shipped files (services/conformance.py), not the store

    def allows(self, interaction: str) -> bool:
        return interaction in self.interactions


RESOURCES: dict[str, ResourceDef] = {
    r.name: r
    for r in (
        ResourceDef("Patient", FULL, documentation="The DMP itself, identified by the patient's INS"),
        ResourceDef("DocumentReference", FULL, ("subject",), "A document's metadata (IHE MHD, ANS PDSm)"),
        ResourceDef("Binary", FULL, documentation="A document's bytes; securityContext names its DocumentReference"),
        ResourceDef("List", FULL, ("subject",), "An MHD SubmissionSet"),
        ResourceDef("Consent", FULL, ("patient",), "The patient's choices: authorisations, blocks, oppositions"),
        ResourceDef("AuditEvent", READ_ONLY, documentation="Access traces, written by the server only"),
        ResourceDef("Composition", FULL, ("subject",), "The VSM (Volet de Synthèse Médicale)"),
        ResourceDef("Communication", FULL, ("subject",), "Notifications to the patient"),
        # The patient summary's entry types: VSM section entries, governed like a document of type 60591-5
        *(ResourceDef(name, FULL, (path,), f"A VSM section entry ({what}), seen as the VSM (type 60591-5) is")
          for name, path, what in (("Condition", "subject", "problems"),
                                   ("AllergyIntolerance", "patient", "allergies"),
                                   ("MedicationStatement", "subject", "medications"),
                                   ("Procedure", "subject", "procedures"),
                                   ("DeviceUseStatement", "subject", "medical devices"),
                                   ("Immunization", "patient", "immunizations"),
                                   ("Observation", "subject", "results, social history"))),
        ResourceDef("Practitioner", FULL, documentation="A health professional"),
        # -- subscriptions (services/subscriptions.py, topics.py): kept apart from the resource store
        ResourceDef("Subscription", ("read", "create", "update", "delete", "search-type"),
                    documentation="A topic-based subscription (R5 Backport, IHE DSUBm): notified only of what its "
                    "subscriber may see; search by patient (the patient sees those on their DMP), status, _id"),
        ResourceDef("Basic", ("read", "search-type"), documentation="The subscription topics (IHE DSUBm), as the "
                    "R4 backport represents a SubscriptionTopic; search by code=SubscriptionTopic, url, _id"),
        ResourceDef("PractitionerRole", FULL, documentation="A professional's role in a structure"),
        ResourceDef("Organization", FULL, documentation="A health structure"),
        ResourceDef("CodeSystem", SHIPPED, documentation="ANS and HL7 code systems the DMP uses (TRE_G15, TRE_R38, "
                    "TRE_A03, TRE_A05, TRE_A07, TRE_A08, v3-Confidentiality); $lookup", shipped=True),
        ResourceDef("ValueSet", SHIPPED, documentation="DMP value sets (JDV_J57, JDV_J58, JDV_J66, the DMP document "
                    "types); $expand, $validate-code", shipped=True),
        ResourceDef("ConceptMap", SHIPPED, documentation="ASS_X16: each DMP document type's class", shipped=True),
        ResourceDef("StructureDefinition", SHIPPED, documentation="The profiles this server's resources follow",
                    shipped=True),
        ResourceDef("OperationDefinition", SHIPPED, documentation="The definition of every operation this "
                    "statement declares", shipped=True),
    )
}

SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")
SERVED_APART = ("Subscription", "Basic")  # not in the resource store: no transaction entry, history or include
