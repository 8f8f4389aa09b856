"""FHIR R4 XML <-> JSON: official examples round-trip, primitives follow the JSON `_name` rules,
and hostile XML (billion laughs, XXE, DTDs, deep nesting) is a 400, never an expansion."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError
from fhir_dmp.http import fhirxml_read
from fhir_dmp.http.fhirxml import json_to_xml, xml_to_json
from fhir_dmp.http.fhirxml_types import ELEMENTS_FILE

REF = Path(__file__).resolve().parents[1] / "data" / "reference"  # in-repo copies (tests/data/reference/SOURCES.md)
R4_EXAMPLES = REF / "fhir-r4" / "examples"
PDSM_EXAMPLES = REF / "ig" / "pdsm" / "examples"
NS = 'xmlns="http://hl7.org/fhir"'
XHTML = "http://www.w3.org/1999/xhtml"



def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def canon(value):
    """Narratives compared as XML (C14N): `&quot;` and `"` are the same XHTML, and the parser
    turns a raw newline inside an attribute into a space. Everything else compared as is."""
    if isinstance(value, dict):
        return {k: etree.canonicalize(v) if k == "div" else canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canon(v) for v in value]
    return value


def assert_same(a, b, path="$"):
    """Equal, and of the same JSON type (an int in a JSON decimal may come back as Decimal)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        numbers = (int, Decimal)
        same_type = type(a) is type(b) or (
            isinstance(a, numbers) and isinstance(b, numbers) and bool not in (type(a), type(b))
        )
        assert same_type and a == b, f"{path}: {a!r} != {b!r}"


def refused(data, status=400) -> FhirError:
    with pytest.raises(FhirError) as info:
        xml_to_json(data)
    assert info.value.status == status
    assert info.value.issues[0].code in ("structure", "invalid")
    return info.value


def doc(body: str, root: str = "Patient") -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><{root} {NS}>{body}</{root}>'.encode()


# --- official and PDSm examples -------------------------------------------------------------------

JSON_EXAMPLES = _files(R4_EXAMPLES, "*.json") + _files(PDSM_EXAMPLES, "*.json")
XML_EXAMPLES = _files(R4_EXAMPLES, "*.xml")


def test_examples_are_there():
    assert len(JSON_EXAMPLES) >= 20 and len(XML_EXAMPLES) >= 5


@pytest.mark.parametrize("path", JSON_EXAMPLES, ids=lambda p: p.name)
def test_json_example_round_trips(path):
    original = fhirjson.loads(path.read_bytes())
    xml = json_to_xml(original)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(xml)
    assert root.tag == "{http://hl7.org/fhir}" + original["resourceType"]
    back = xml_to_json(xml)
    assert_same(canon(back), canon(original))
    assert json_to_xml(back) == xml  # and the second serialisation is byte-identical


@pytest.mark.parametrize("path", XML_EXAMPLES, ids=lambda p: p.name)
def test_xml_example_parses_and_is_stable(path):
    first = xml_to_json(path.read_bytes())
    assert first["resourceType"] == etree.QName(etree.parse(str(path)).getroot()).localname
    xml = json_to_xml(first)
    assert_same(xml_to_json(xml), first)
    assert json_to_xml(xml_to_json(xml)) == xml


@pytest.mark.parametrize("name", ["patient-example", "organization-1"])
def test_official_xml_and_json_examples_agree(name):
    from_xml = xml_to_json((R4_EXAMPLES / f"{name}.xml").read_bytes())
    from_json = fhirjson.loads((R4_EXAMPLES / f"{name}.json").read_bytes())
    assert_same(canon(from_xml), canon(from_json))


def test_patient_example_key_fields():
    p = xml_to_json((R4_EXAMPLES / "patient-example.xml").read_bytes())
    assert (p["resourceType"], p["id"], p["active"], p["gender"]) == ("Patient", "example", True, "male")
    assert p["birthDate"] == "1974-12-25"
    assert p["_birthDate"]["extension"][0]["valueDateTime"] == "1974-12-25T14:35:45-05:00"
    assert p["name"][0]["given"] == ["Peter", "James"]
    assert p["deceasedBoolean"] is False
    assert p["text"]["div"].startswith(f'<div xmlns="{XHTML}">')
    assert list(p)[:3] == ["resourceType", "id", "text"]


# --- hostile and malformed XML --------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Patient xmlns="http://hl7.org/fhir"><id value="&lol9;"/></Patient>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><gender value="&x;"/></Patient>"""

XXE_PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>
<Patient xmlns="http://hl7.org/fhir"><active value="true"/></Patient>"""

XXE_IN_TEXT = b"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir"><text>
<status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml">&x;</div></text></Patient>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Patient SYSTEM "file:///etc/passwd">
<Patient xmlns="http://hl7.org/fhir"><active value="true"/></Patient>"""


ATTACKS = [BILLION_LAUGHS, XXE, XXE_IN_TEXT, XXE_PARAMETER, EXTERNAL_DTD]
ATTACK_IDS = ["lol", "xxe", "xxe-text", "pe", "ext"]


@pytest.mark.parametrize("data", ATTACKS, ids=ATTACK_IDS)
def test_dtds_are_refused(data):
    err = refused(data)
    assert err.issues[0].code == "structure" and "DTD" in err.issues[0].diagnostics
    assert "root:" not in str(err.outcome())


@pytest.mark.parametrize("data", ATTACKS, ids=ATTACK_IDS)
def test_dtds_are_refused_even_past_the_byte_scan(monkeypatch, data):
    """Defence in depth: with the pre-parse scan off, the parser still expands and fetches nothing,
    and the parsed document's DTD is refused."""
    monkeypatch.setattr(fhirxml_read, "DTD_MARKERS", ())
    err = refused(data)
    diagnostics = err.issues[0].diagnostics
    assert err.issues[0].code == "structure"
    assert any(w in diagnostics for w in ("DTD", "external resources are not allowed", "external entity"))


def test_the_parser_resolver_refuses_any_fetch():
    """libxml2 reads an external DTD subset for some option mixes (collect_ids=False, load_dtd=True);
    the resolver on our parser turns any such fetch into an error."""
    parser = etree.XMLParser(load_dtd=True, no_network=True, resolve_entities=False)
    parser.resolvers.add(fhirxml_read._RefuseExternal())
    with pytest.raises(ValueError, match="external resources are not allowed"):
        etree.fromstring(EXTERNAL_DTD, parser)
    with pytest.raises(ValueError, match="external resources are not allowed"):
        fhirxml_read.hardened_parser().resolvers.resolve("file:///etc/passwd", None, None)


def test_utf16_is_refused_before_parsing():
    """libxml2 detects UTF-16 without a BOM; its NUL bytes would hide a DOCTYPE from the scan."""
    refused(XXE.decode().encode("utf-16-le"))
    refused(XXE.decode().encode("utf-16"))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'<Patient xmlns="http://hl7.org/fhir/x"><active value="true"/></Patient>', "namespace"),
        (b'<Patient><active value="true"/></Patient>', "namespace"),
        (doc('<active xmlns="urn:other" value="true"/>'), "namespace"),
        (doc('<active value="true"/>', root="Patientt"), "Unknown resource type"),
        (b'<Patient xmlns="http://hl7.org/fhir" id="x"><active value="true"/></Patient>', "attribute 'id'"),
        (doc('<id value="1">'), "not well-formed"),
        (b"", "Not an XML document"),
        (b'{"resourceType": "Patient"}', "Not an XML document"),
        (b"<Patient", "not well-formed"),
        (doc('<birthDate value="2000"><id value="x"/></birthDate>'), "Unknown element 'id'"),
        (doc('<active value="true" bogus="1"/>', root="Patientt"), "Unknown resource type"),
        (doc('<name family="X"/>'), "Unknown attribute 'family'"),
        (doc('<active value="true" resourceType="X"/>'), "Unknown attribute 'resourceType'"),
        (doc('<name xmlns:x="urn:x" x:foo="1"><family value="X"/></name>'), "Unknown attribute '{urn:x}foo'"),
        (doc('<extension><url value="http://x"/><valueString value="x"/></extension>'), "Unknown element 'url'"),
        (doc('<contained>hello<Patient/></contained>'), "Text content"),
        (doc("<contained/>"), "exactly one resource"),
        (doc('<text><status value="generated"/><div>x</div></text>'), "XHTML"),
        ('<?xml version="1.0" encoding="ISO-8859-1"?><Patient/>'.encode("latin-1"), "UTF-8"),
        ('<?xml version="1.0" encoding="UTF-16"?><Patient/>'.encode("utf-16"), "Not an XML document"),
        (b'<Patient xmlns="http://hl7.org/fhir"><active value="\xff"/></Patient>', "not well-formed"),
    ],
)
def test_malformed_xml_is_a_400(data, words):
    err = refused(data)
    assert words in err.issues[0].diagnostics


def test_an_unknown_element_is_kept_for_the_structural_walk():
    """Not a 400 of its own: kept (its value, or {}) so that the structural walk reports it together with the
    body's other errors, in one 422 (docs/conformance.md, One round of errors)."""
    assert xml_to_json(doc('<foo value="1"/><active value="true"/>')) == {
        "resourceType": "Patient", "active": True, "foo": "1"}
    assert xml_to_json(doc('<name><given value="A"/><nickname><x value="B"/></nickname></name>')) == {
        "resourceType": "Patient", "name": [{"given": ["A"], "nickname": {}}]}
    assert xml_to_json(doc("<foo/>")) == {"resourceType": "Patient", "foo": {}}


@pytest.mark.parametrize("name", ["resourceType", "_birthDate", "Foo"])
def test_an_unknown_element_that_would_change_the_json_is_a_400(name):
    """`<resourceType value="Practitioner"/>` in a Patient would make it a Practitioner, `<_birthDate>` the holder of
    birthDate's extensions: such names are refused as before, not kept."""
    err = refused(doc(f'<{name} value="Practitioner"/>'))
    assert f"Unknown element '{name}'" in err.issues[0].diagnostics


def test_nesting_depth_is_bounded():
    deep = doc('<extension url="u">' * 150 + '<valueString value="x"/>' + "</extension>" * 150)
    err = refused(deep)
    assert "too deeply" in err.issues[0].diagnostics and len(err.issues[0].expression[0]) < 200
    refused(doc('<extension url="u">' * 300 + "</extension>" * 300))  # libxml2's own limit


def test_xsi_schema_location_is_tolerated_and_comments_ignored():
    xml = (
        b'<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        b' xsi:schemaLocation="http://hl7.org/fhir fhir-all.xsd"><!-- c --><active value="true"/></Patient>'
    )
    assert xml_to_json(xml) == {"resourceType": "Patient", "active": True}


# --- primitives, extensions, decimals, narrative, nested resources --------------------------------


def test_primitive_with_extension_goes_to_underscore_sibling():
    ext = '<extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">'
    xml = doc(
        f'<birthDate id="b1" value="1974-12-25">{ext}<valueDateTime value="1974-12-25T14:35:45-05:00"/>'
        "</extension></birthDate>"
    )
    p = xml_to_json(xml)
    assert p["birthDate"] == "1974-12-25"
    assert p["_birthDate"] == {
        "id": "b1",
        "extension": [{"url": ext[16:-2], "valueDateTime": "1974-12-25T14:35:45-05:00"}],
    }
    assert json_to_xml(p) == xml
    only_ext = xml_to_json(doc(f'<birthDate>{ext}<valueCode value="x"/></extension></birthDate>'))
    assert "birthDate" not in only_ext and only_ext["_birthDate"]["extension"][0]["valueCode"] == "x"


def test_primitive_arrays_align_values_and_extensions_with_nulls():
    p = {
        "resourceType": "Patient",
        "name": [
            {
                "given": ["Peter", None, "Jim"],
                "_given": [
                    None,
                    {"id": "g2", "extension": [{"url": "https://hl7.fr/ig/test/nick", "valueString": "PJ"}]},
                    {"id": "g3"},
                ],
            }
        ],
    }
    xml = json_to_xml(p)
    assert b'<given value="Peter"/><given id="g2"><extension url="https://hl7.fr/ig/test/nick">' in xml
    assert b'<given id="g3" value="Jim"/>' in xml
    assert xml_to_json(xml) == p
    plain = xml_to_json(doc('<name><given value="A"/><given value="B"/></name>'))
    assert plain["name"] == [{"given": ["A", "B"]}]  # no _given when no item has id/extension


@pytest.mark.parametrize(
    "bad",
    [
        {"given": ["A"], "_given": [None, None]},
        {"given": [None]},
        {"_given": [{"foo": 1}]},
        {"given": "A"},
    ],
)
def test_bad_primitive_arrays_in_json_are_refused(bad):
    with pytest.raises(FhirError) as info:
        json_to_xml({"resourceType": "Patient", "name": [bad]})
    assert info.value.status == 400


def test_decimals_keep_their_exact_text():
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": Decimal("1.50"), "unit": "mg"},
        "referenceRange": [{"low": {"value": Decimal("0.0000001")}, "high": {"value": Decimal("1E+3")}}],
    }
    xml = json_to_xml(obs)
    assert b'<value value="1.50"/>' in xml and b'<value value="0.0000001"/>' in xml
    back = xml_to_json(xml)
    value = back["valueQuantity"]["value"]
    assert isinstance(value, Decimal) and str(value) == "1.50"
    assert str(back["referenceRange"][0]["low"]["value"]) == "1E-7"
    assert back == obs
    assert fhirjson.dumps(back["valueQuantity"]) == '{"value":1.50,"unit":"mg"}'


def test_numbers_and_booleans_get_json_types():
    p = xml_to_json(doc('<active value="false"/><multipleBirthInteger value="-3"/>'))
    assert p["active"] is False and p["multipleBirthInteger"] == -3 and type(p["multipleBirthInteger"]) is int
    params = xml_to_json(
        doc(
            '<parameter><name value="p"/><valuePositiveInt value="+4"/></parameter>'
            '<parameter><name value="u"/><valueUnsignedInt value="0"/></parameter>'
            '<parameter><name value="d"/><valueDecimal value="-0.10"/></parameter>',
            root="Parameters",
        )
    )
    values = [next(v for k, v in p.items() if k.startswith("value")) for p in params["parameter"]]
    assert values == [4, 0, Decimal("-0.10")] and [type(v) for v in values] == [int, int, Decimal]
    assert str(values[2]) == "-0.10"
    zero = xml_to_json(doc('<parameter><name value="p"/><valuePositiveInt value="0"/></parameter>', root="Parameters"))
    assert zero["parameter"][0]["valuePositiveInt"] == 0  # carried as JSON has it: the walk refuses it


def test_narrative_div_is_serialised_xhtml_with_its_own_namespace_only():
    xml = (
        b'<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        b'<text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>A &amp; B'
        b" &lt;c&gt;</p></div></text></Patient>"
    )
    div = xml_to_json(xml)["text"]["div"]
    assert div == '<div xmlns="http://www.w3.org/1999/xhtml"><p>A &amp; B &lt;c&gt;</p></div>'
    prefixed = (
        b'<Patient xmlns="http://hl7.org/fhir" xmlns:h="http://www.w3.org/1999/xhtml">'
        b'<text><status value="generated"/><h:div><h:p>x</h:p></h:div></text></Patient>'
    )
    assert xml_to_json(prefixed)["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div>'


def test_narrative_is_written_as_real_xhtml():
    p = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div><p>a&nbsp;b</p></div>"}}
    root = etree.fromstring(json_to_xml(p))
    div = root.find(f"{{http://hl7.org/fhir}}text/{{{XHTML}}}div")
    assert div is not None and div.find(f"{{{XHTML}}}p").text == "a\u00a0b"
    for bad in [
        "not xml",
        "<div><p></div>",
        "<span>x</span>",
        '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><div>&x;</div>',
    ]:
        with pytest.raises(FhirError) as info:
            json_to_xml({"resourceType": "Patient", "text": {"status": "generated", "div": bad}})
        assert info.value.status == 400


def test_contained_resources():
    p = {
        "resourceType": "Patient",
        "id": "p",
        "contained": [{"resourceType": "Organization", "id": "o1", "name": "Org"}],
        "managingOrganization": {"reference": "#o1"},
    }
    xml = json_to_xml(p)
    assert b'<contained><Organization><id value="o1"/><name value="Org"/></Organization></contained>' in xml
    assert xml_to_json(xml) == p


def test_bundle_entry_resource_and_outcome():
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {"resourceType": "Patient", "active": True},
                "response": {
                    "status": "201 Created",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "information", "code": "informational"}],
                    },
                },
            },
        ],
    }
    xml = json_to_xml(bundle)
    assert b'<resource><Patient><active value="true"/></Patient></resource>' in xml
    assert b"<outcome><OperationOutcome>" in xml
    assert xml_to_json(xml) == bundle
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "r", "resource": {"resourceType": "Binary", "contentType": "text/plain"}},
            {"name": "n", "valueInteger": 3},
        ],
    }
    assert xml_to_json(json_to_xml(params)) == params


def test_elements_are_written_in_definition_order_whatever_the_dict_order():
    p = {
        "gender": "male",
        "name": [{"given": ["A"], "family": "F"}],
        "id": "x",
        "resourceType": "Patient",
        "extension": [{"valueString": "v", "url": "u"}],
        "meta": {"versionId": "1"},
    }
    root = etree.fromstring(json_to_xml(p))
    assert [etree.QName(c).localname for c in root] == ["id", "meta", "extension", "name", "gender"]
    assert [etree.QName(c).localname for c in root.find("{http://hl7.org/fhir}name")] == ["family", "given"]
    assert list(xml_to_json(json_to_xml(p))) == ["resourceType", "id", "meta", "extension", "name", "gender"]


@pytest.mark.parametrize(
    "bad",
    [
        {"resourceType": "Nope"},
        {"active": True},
        {"resourceType": "Patient", "bogus": 1},
        {"resourceType": "Patient", "_name": {"id": "x"}},
        {"resourceType": "Patient", "active": "true"},
        {"resourceType": "Patient", "multipleBirthInteger": True},
        {"resourceType": "Patient", "name": {"family": "F"}},
        {"resourceType": "Patient", "name": [{}]},
    ],
)
def test_bad_json_is_refused(bad):
    with pytest.raises(FhirError) as info:
        json_to_xml(bad)
    assert info.value.status == 400


def test_characters_xml_cannot_carry_become_u_fffd():
    """Writes refuse them; an echoed one, or one stored before that check, must not make the answer unwritable."""
    written = json_to_xml({"resourceType": "Patient", "gender": "ma\x00le", "_gender": {"id": "a\ufffe\ud800"}})
    assert xml_to_json(written) == {"resourceType": "Patient", "gender": "ma\ufffdle",
                                    "_gender": {"id": "a\ufffd\ufffd"}}


# --- properties -----------------------------------------------------------------------------------

XML_TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff", min_codepoint=9
    ).filter(lambda c: c >= " " or c in "\t\n\r"),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    text=XML_TEXT,
    dec=st.from_regex(r"-?(0|[1-9][0-9]{0,12})(\.[0-9]{1,8})?", fullmatch=True),
    names=st.lists(st.tuples(st.none() | XML_TEXT, st.booleans()), min_size=1, max_size=5).filter(
        lambda xs: all(v is not None or e for v, e in xs)
    ),
)
def test_round_trip_property(text, dec, names):
    given_ = [v for v, _ in names]
    exts = [{"extension": [{"url": "u", "valueString": text}]} if e else None for _, e in names]
    name: dict = {}
    if any(v is not None for v in given_):
        name["given"] = given_
    if any(exts):
        name["_given"] = exts
    p = {
        "resourceType": "Patient",
        "extension": [{"url": "d", "valueDecimal": Decimal(dec)}, {"url": "s", "valueString": text}],
        "name": [name],
    }
    xml = json_to_xml(p)
    assert f'value="{dec}"'.encode() in xml
    back = xml_to_json(xml)
    assert back == p and str(back["extension"][0]["valueDecimal"]) == str(Decimal(dec))


# --- the element table ----------------------------------------------------------------------------


def test_element_table_is_small_fast_and_sourced():
    start = time.perf_counter()
    raw = json.loads(ELEMENTS_FILE.read_text())
    assert time.perf_counter() - start < 0.2
    assert "hl7.fhir.r4.core" in raw["source"]
    assert len(raw["resources"]) == 146 and "Project" not in raw["resources"]  # no Medplum additions
    t = raw["types"]
    base = ["id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"]
    assert [r[0] for r in t["Patient"][:8]] == base
    assert ["contained", "Resource", "*"] in t["Patient"] and ["div", "xhtml", ""] in t["Narrative"]
    assert ["url", "uri", "@"] in t["Extension"] and ["id", "string", "@"] in t["Patient.contact"]
    assert ["deceasedBoolean", "boolean", "", "deceased[x]"] in t["Patient"]
    assert ["resource", "Resource", ""] in t["Bundle.entry"] and "project" not in {r[0] for r in t["Meta"]}


def test_conversion_is_fast():
    d = fhirjson.loads((R4_EXAMPLES / "documentreference-example.json").read_bytes())
    xml = json_to_xml(d)
    start = time.perf_counter()
    for _ in range(50):
        xml_to_json(json_to_xml(d))
    assert (time.perf_counter() - start) / 50 < 0.01  # ~0.5 ms measured; generous for slow CI
    assert xml_to_json(xml)["resourceType"] == "DocumentReference"
