"""Criteria tree -> one SQLAlchemy WHERE clause over the `resource` table."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true

from fhir_dmp.storage import criteria as c
from fhir_dmp.storage.tables import resource, token_index


def compile_criterion(node: c.Criterion) -> ColumnElement[bool]:
    if isinstance(node, c.IdIn):
        return resource.c.id.in_(node.ids) if node.ids else false()
    if isinstance(node, c.PatientIs):
        return resource.c.patient_key == node.patient_key
    if isinstance(node, c.Token):
        conds = [
            token_index.c.resource_pk == resource.c.pk,
            token_index.c.resource_type == resource.c.resource_type,
            token_index.c.param == node.param,
        ]
        if node.code is not None:
            conds.append(token_index.c.code == node.code)
        if node.system is not None:
            conds.append(token_index.c.system == node.system)
        return exists(select(token_index.c.resource_pk).where(*conds))
    if isinstance(node, c.UpdatedCompare):
        conds = []
        if node.low is not None:
            conds.append(resource.c.last_updated >= node.low)
        if node.high is not None:
            conds.append(resource.c.last_updated < node.high)
        return and_(true(), *conds)
    if isinstance(node, c.AnyOf):
        return or_(false(), *(compile_criterion(p) for p in node.parts))
    if isinstance(node, c.AllOf):
        return and_(true(), *(compile_criterion(p) for p in node.parts))
    raise TypeError(f"unknown criterion {node!r}")
