"""Claim mappings (policy/mappings.py, data/claims-*.json): an issuer's claims -> the contract's flat claims, then
the same strict parser as a shared-secret token's. A mapping moves values; it never repairs them."""

from __future__ import annotations

import copy

import pytest

from fhir_dmp.config import project_dir
from fhir_dmp.policy.claims import InvalidClaim, load_claim_shapes
from fhir_dmp.policy.mappings import load_mapping

SHAPES = load_claim_shapes(project_dir() / "terminologies")
# A Pro Santé Connect userinfo, in the shape the ANS publishes (data/claims-psc.json cites the sources).
PSC = {
    "sub": "f:550dc1c8:psc", "SubjectNameID": "810001234567", "preferred_username": "810001234567",
    "SubjectRefPro": {"exercices": [{
        "codeProfession": "10", "codeCategorieProfessionnelle": "C", "codeTypeSavoirFaire": "S",
        "codeSavoirFaire": "SM26",
        "activities": [{"codeModeExercice": "L", "numeroFinessSite": "750000001", "raisonSocialeSite": "CABINET"}]}]},
    "Acces_Regulation_Medicale": "FAUX", "SubjectRole": ["10^1.2.250.1.213.1.1.5.5"],
}
MAPPING = load_mapping("psc+patient+system", {"clients": {"feeder-client": "assurance-maladie-feed"}})


def caller(claims):
    return SHAPES.read(MAPPING.apply(claims))


def test_a_psc_professional_maps_to_the_contract_claims():
    c = caller(PSC)
    assert (c.actor, c.sub, c.profession, c.specialty, c.organization, c.purpose_of_use) == (
        "professional", "810001234567", "10", "SM26", "750000001", "TREAT")


def test_psc_medical_regulation_is_the_etreat_purpose():
    assert caller({**PSC, "Acces_Regulation_Medicale": "VRAI"}).purpose_of_use == "ETREAT"
    with pytest.raises(InvalidClaim):
        caller({**PSC, "Acces_Regulation_Medicale": "vrai"})


def test_psc_empty_values_are_absent_and_several_places_name_no_organisation():
    claims = copy.deepcopy(PSC)
    practice = claims["SubjectRefPro"]["exercices"][0]
    practice["codeSavoirFaire"] = ""
    practice["activities"].append({"numeroFinessSite": "750000002"})
    c = caller(claims)
    assert (c.specialty, c.organization) == (None, None)


@pytest.mark.parametrize("change", [
    lambda c: c["SubjectRefPro"]["exercices"].append({"codeProfession": "21"}),  # which profession? refused
    lambda c: c["SubjectRefPro"]["exercices"].clear(),  # no profession at all: a professional without one
    lambda c: c["SubjectRefPro"]["exercices"][0].update(codeProfession=" 10"),
    lambda c: c["SubjectRefPro"]["exercices"][0].update(codeProfession=["10"]),
    lambda c: c["SubjectRefPro"]["exercices"][0].update(codeSavoirFaire="SM25 "),
    lambda c: c["SubjectRefPro"].update(exercices={"codeProfession": "10"}),
    lambda c: c.update(SubjectNameID=" 810001234567"),
    lambda c: c.update(SubjectNameID="ANS20231122132732"),  # not an idNatPs
])
def test_a_psc_claim_of_another_shape_is_refused_never_repaired(change):
    claims = copy.deepcopy(PSC)
    change(claims)
    with pytest.raises(InvalidClaim):
        caller(claims)


def test_an_occupational_physician_maps_to_sm25_which_the_dmp_rules_refuse():
    claims = copy.deepcopy(PSC)
    claims["SubjectRefPro"]["exercices"][0]["codeSavoirFaire"] = "SM25"
    assert caller(claims).specialty == "SM25"  # actors.refusal answers 403, as for an HS256 token


def test_patients_and_representatives():
    patient = caller({"sub": "x", "ins": "1800175123456"})
    assert (patient.actor, patient.sub, patient.patient) == ("patient", "1800175123456", "1800175123456")
    rep = caller({"sub": "rep-0042", "represents": "2150375123456"})
    assert (rep.actor, rep.sub, rep.patient) == ("representative", "rep-0042", "2150375123456")
    assert caller({"sub": "x", "ins": "1800175123456", "secret_connection": True}).secret is True
    for bad in ({"sub": "x", "ins": "1800175123456 "}, {"sub": "x", "ins": ["1800175123456"]},
                {"sub": "x", "ins": "1800175123456", "secret_connection": "true"}):
        with pytest.raises(InvalidClaim):
            caller(bad)


def test_system_clients_must_be_registered():
    system = caller({"sub": "feeder-client", "client_id": "feeder-client"})
    assert (system.actor, system.sub) == ("system", "assurance-maladie-feed")
    with pytest.raises(InvalidClaim):
        caller({"sub": "other-client", "client_id": "other-client"})


def test_a_user_token_of_a_registered_client_is_not_a_system_token():
    """RFC 9068: a user's token carries the client's id too; only sub == client_id (no resource owner) is the
    client acting for itself."""
    with pytest.raises(InvalidClaim):
        caller({"sub": "someone", "client_id": "feeder-client"})


def test_no_rule_matching_is_refused_and_the_flat_mapping_is_the_contract():
    with pytest.raises(InvalidClaim):
        caller({"sub": "810001234567", "actor": "professional", "profession": "10"})  # not psc/patient/system
    flat = SHAPES.read(load_mapping("dmp").apply({"sub": "810001234567", "actor": "professional", "profession": "10",
                                                  "iss": "x", "extra": 1}))
    assert (flat.actor, flat.sub, flat.profession) == ("professional", "810001234567", "10")


def test_an_unknown_mapping_is_a_configuration_error():
    with pytest.raises(ValueError, match="unknown claim mapping"):
        load_mapping("psc+nope")
    with pytest.raises(ValueError):
        load_mapping("../claims-psc")


@pytest.mark.parametrize("change", [
    lambda c: c.update(SubjectNameID=["810001234567"]),
    lambda c: c.update(SubjectNameID=["810001234567", "810009999999"]),
    lambda c: c["SubjectRefPro"]["exercices"][0].update(codeSavoirFaire=["SM26"]),
    lambda c: c["SubjectRefPro"]["exercices"][0].update(codeSavoirFaire=["SM26", "SM25"]),  # SM25 hidden second
    lambda c: c["SubjectRefPro"]["exercices"][0].update(codeProfession=["10", "21"]),
    lambda c: c["SubjectRefPro"]["exercices"][0].update(codeProfession=10),
    lambda c: c["SubjectRefPro"]["exercices"][0]["activities"][0].update(numeroFinessSite=["750000001"]),
    lambda c: c["SubjectRefPro"]["exercices"][0].update(activities={"numeroFinessSite": "750000001"}),
    lambda c: c.update(Acces_Regulation_Medicale=["VRAI"]),
    lambda c: c.update(Acces_Regulation_Medicale=True),
    lambda c: c.update(SubjectRefPro=[c["SubjectRefPro"]]),
    lambda c: c.update(ins="1800175123456"),  # a professional's claims and a patient's INS: which caller?
    lambda c: c.update(represents="2150375123456"),
    lambda c: c.update(client_id=c["sub"]),  # and a client acting for itself
])
def test_lists_where_one_value_is_expected_and_tokens_of_two_kinds(change):
    claims = copy.deepcopy(PSC)
    change(claims)
    with pytest.raises(InvalidClaim):
        caller(claims)


def test_a_patient_token_claiming_to_represent_another_patient_is_refused():
    """A token carrying the holder's own INS and the INS of someone they represent does not say which DMP the
    session acts on: it used to become a representative of the other INS; no rule matches it now."""
    with pytest.raises(InvalidClaim, match="no rule"):
        caller({"sub": "x", "ins": "1800175123456", "represents": "2150375123456"})
    for represents in (["2150375123456"], ["2150375123456", "2800275123456"], "", None):
        with pytest.raises(InvalidClaim):
            caller({"sub": "rep-0042", "represents": represents})


def test_the_flat_mapping_trusts_the_issuer_s_actor_claim():
    """`dmp` reads the contract's claims as the issuer wrote them, a system actor included: it is for an issuer
    that speaks the contract (development), never for a professionals' or patients' provider."""
    flat = SHAPES.read(load_mapping("dmp").apply({"actor": "system", "sub": "anything"}))
    assert flat.actor == "system"
    assert load_mapping("psc").takes_registry is False and load_mapping("patient+system").takes_registry is True


def test_system_clients_are_registered_per_issuer(tmp_path):
    from fhir_dmp.policy.mappings import load_registry

    short = tmp_path / "short.json"
    short.write_text('{"clients": {"dmp-feeder": "feeder"}}')
    assert load_registry(short, ["https://a"]) == {"https://a": {"clients": {"dmp-feeder": "feeder"}}}
    assert load_registry(short, []) == {}
    with pytest.raises(ValueError, match="whose each client is"):
        load_registry(short, ["https://a", "https://b"])  # which issuer's dmp-feeder is it?
    per_issuer = tmp_path / "issuers.json"
    per_issuer.write_text('{"issuers": {"https://a": {"dmp-feeder": "feeder"}}}')
    assert load_registry(per_issuer, ["https://a", "https://b"]) == {
        "https://a": {"clients": {"dmp-feeder": "feeder"}}, "https://b": {"clients": {}}}
    with pytest.raises(ValueError, match="not an issuer"):
        load_registry(per_issuer, ["https://b"])
    for bad in ('{"issuers": []}', '{"issuers": {"https://a": {"x": 1}}}', '["x"]'):
        per_issuer.write_text(bad)
        with pytest.raises(ValueError):
            load_registry(per_issuer, ["https://a"])
