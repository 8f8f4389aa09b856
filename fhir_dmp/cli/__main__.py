"""`python -m fhir_dmp.cli`."""

from fhir_dmp.cli import main

main()
