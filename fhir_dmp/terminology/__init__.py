"""Terminology: the CodeSystems, ValueSets, ConceptMaps and StructureDefinitions the server ships, loaded once
from files (`store`), and what the terminology operations compute over them (`codesystems`: $lookup;
`expansion`: $expand, $validate-code). Pure Python, no IO per call, no Flask, no SQL: `validation` and
`search` may use it as well as `services`."""
