"""Stored JSON answered verbatim: what `raw` pieces become in compact JSON, pretty JSON and parsed form."""

from __future__ import annotations

from fhir_dmp import fhirjson


def test_raw_pieces_are_written_verbatim_and_keep_decimal_digits() -> None:
    stored = '{"resourceType":"Observation","valueQuantity":{"value":1.50},"note":[{"text":"é"}]}'
    bundle = {"resourceType": "Bundle", "entry": [{"resource": fhirjson.raw(stored)}]}
    text = fhirjson.dumps(bundle)
    assert text == '{"resourceType":"Bundle","entry":[{"resource":' + stored + "}]}"
    assert str(fhirjson.loads(text)["entry"][0]["resource"]["valueQuantity"]["value"]) == "1.50"


def test_materialize_parses_every_raw_piece_and_leaves_the_rest() -> None:
    stored = '{"resourceType":"Patient","id":"p","extension":[{"url":"u","valueDecimal":0.0000001}]}'
    value = {"a": [fhirjson.raw(stored), {"b": fhirjson.raw("[1,2]")}], "c": 3}
    parsed = fhirjson.materialize(value)
    assert parsed["a"][0]["id"] == "p"
    assert str(parsed["a"][0]["extension"][0]["valueDecimal"]) == "0.0000001"
    assert parsed["a"][1] == {"b": [1, 2]} and parsed["c"] == 3
    assert fhirjson.dumps_pretty(parsed).count("\n") > 5


def test_trusted_loads_keeps_decimals_exactly() -> None:
    assert str(fhirjson.trusted_loads('{"v":1E-7}')["v"]) == "1E-7"
