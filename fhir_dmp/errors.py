"""Errors every layer may raise; the HTTP layer renders them as OperationOutcome.

A leaf module: it imports nothing of ours, so storage, search, policy and services can all
raise the same error type and the HTTP layer has one place that turns it into a response.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: `code` from the FHIR issue-type value set."""

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def to_fhir(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class FhirError(Exception):
    """A refusal with its HTTP status and the issues that explain it."""

    status: int
    issues: list[Issue]
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)

    @classmethod
    def of(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> FhirError:
        issue = Issue(code, diagnostics, (expression,) if expression else ())
        return cls(status, [issue], dict(headers or {}))

    def outcome(self) -> dict:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def bad_request(diagnostics: str, expression: str | None = None, code: str = "invalid") -> FhirError:
    return FhirError.of(400, code, diagnostics, expression)


def not_found(diagnostics: str) -> FhirError:
    return FhirError.of(404, "not-found", diagnostics)


def unprocessable(diagnostics: str, expression: str | None = None, code: str = "processing") -> FhirError:
    return FhirError.of(422, code, diagnostics, expression)


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError.of(412, "conflict", diagnostics)


def conflict(diagnostics: str) -> FhirError:
    return FhirError.of(409, "conflict", diagnostics)


def forbidden(diagnostics: str) -> FhirError:
    return FhirError.of(403, "forbidden", diagnostics)
