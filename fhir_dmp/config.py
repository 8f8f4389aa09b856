"""Settings read once from the environment (twelve-factor); one frozen object per app."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fhir_dmp._home import find_home

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The one directory holding `terminologies/`, `capability/`, `profiles/` and `examples/`: FHIR_DMP_HOME if
    set, else the copy shipped in the installed package, else the source tree's top level (fhir_dmp/_home.py)."""
    return find_home()


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///fhir-dmp.db"
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    default_count: int = 20
    max_count: int = 1000
    base_url: str | None = None  # public base URL, when behind a proxy; else taken from the request
    home: Path = field(default_factory=project_dir)
    habilitation_matrix: Path | None = None  # None: terminologies/habilitation-matrix.csv under home
    notify_url: str | None = None  # webhook receiving each notification (Communication), POSTed as JSON
    # Every write of a profiled type conforms to its DMP profile (services/validating.py). Off only to load
    # data of generic FHIR shape (the search engine's own tests do).
    enforce_profiles: bool = True
    # Debug: each response carries `X-Debug-SQL: statements=N; transactions=M`, what that request sent to the
    # database (storage/statements.py). Off by default: the counting listeners are installed only when on.
    debug_sql: bool = False
    # The audit checkpoints (docs/audit.md): the Ed25519 private key that signs them (a PEM file path or the PEM;
    # only `fhir-dmp audit seal` reads it, the server never does), the public keys that verify them (paths or PEM),
    # and the directory receiving an append-only copy of each checkpoint.
    audit_signing_key: str | None = None
    audit_verify_keys: str | None = None
    audit_checkpoint_dir: Path | None = None
    # The front (`fhir-dmp serve`, fhir_dmp/http/front.py): what a client may send before the app sees it.
    max_request_line: int = 32 * 1024  # bytes of method + target + version (414 beyond; POST _search for longer)
    max_header_bytes: int = 64 * 1024  # bytes of all header lines together (431 beyond)
    header_timeout: float = 10.0  # seconds from a request head's first byte to its end (408 beyond)
    body_timeout: float = 60.0  # seconds from the head's end to the body's end (408 beyond)
    idle_timeout: float = 30.0  # seconds a keep-alive connection may stay silent
    connection_limit: int = 1000  # open connections per serving process
    # Subscriptions (docs/subscriptions.md): the URL prefixes a Subscription's endpoint may start with (comma-
    # separated; None: any https URL), the delivery's back-off (seconds, doubled at each failure) and the failures
    # in a row after which a subscription goes to `error`; whether `serve` runs a delivery worker in each process.
    subscription_endpoints: str | None = None
    subscription_retry_base: float = 1.0
    subscription_max_failures: int = 6
    subscription_delivery: bool = True
    # OpenID Connect issuers (docs/identity.md): their URLs, each one's audience and claim mapping (one value for all,
    # or one per issuer, in order), the clock leeway, how long a fetched JWKS is trusted, the least time between two
    # refreshes forced by an unknown `kid`, the registered system clients (client id -> system caller, a JSON file).
    oidc_issuers: tuple[str, ...] = ()
    oidc_audiences: tuple[str, ...] = ()
    oidc_claims: tuple[str, ...] = ()
    oidc_leeway: int = 30
    oidc_jwks_lifespan: float = 300.0
    oidc_refresh_cooldown: float = 30.0
    oidc_clients: Path | None = None

    def __post_init__(self) -> None:
        if self.habilitation_matrix is None:  # the default follows `home`, so it is set here, not as a field default
            object.__setattr__(self, "habilitation_matrix", self.home / "terminologies" / "habilitation-matrix.csv")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values = dict(
            database_url=env.get("FHIR_DMP_DATABASE_URL", cls.database_url),
            jwt_secret=env.get("FHIR_DMP_JWT_SECRET"),
            jwt_public_key=_read_key(env.get("FHIR_DMP_JWT_PUBLIC_KEY")),
            max_body_bytes=int(env.get("FHIR_DMP_MAX_BODY_BYTES", cls.max_body_bytes)),
            default_count=int(env.get("FHIR_DMP_DEFAULT_COUNT", cls.default_count)),
            max_count=int(env.get("FHIR_DMP_MAX_COUNT", cls.max_count)),
            base_url=env.get("FHIR_DMP_BASE_URL"),
            habilitation_matrix=Path(matrix) if (matrix := env.get("FHIR_DMP_HABILITATION_MATRIX")) else None,
            notify_url=env.get("FHIR_DMP_NOTIFY_URL") or None,
            enforce_profiles=env.get("FHIR_DMP_ENFORCE_PROFILES", "true").lower() not in ("false", "0", "no", "off"),
            debug_sql=env.get("FHIR_DMP_DEBUG_SQL", "").lower() in ("1", "true", "yes", "on"),
            audit_signing_key=env.get("FHIR_DMP_AUDIT_SIGNING_KEY") or None,
            audit_verify_keys=",".join(v for v in (env.get("FHIR_DMP_AUDIT_VERIFY_KEYS"),
                                                   env.get("FHIR_DMP_AUDIT_VERIFY_KEY")) if v) or None,
            audit_checkpoint_dir=Path(d) if (d := env.get("FHIR_DMP_AUDIT_CHECKPOINT_DIR")) else None,
            max_request_line=int(env.get("FHIR_DMP_MAX_REQUEST_LINE", cls.max_request_line)),
            max_header_bytes=int(env.get("FHIR_DMP_MAX_HEADER_BYTES", cls.max_header_bytes)),
            header_timeout=float(env.get("FHIR_DMP_HEADER_TIMEOUT", cls.header_timeout)),
            body_timeout=float(env.get("FHIR_DMP_BODY_TIMEOUT", cls.body_timeout)),
            idle_timeout=float(env.get("FHIR_DMP_IDLE_TIMEOUT", cls.idle_timeout)),
            connection_limit=int(env.get("FHIR_DMP_CONNECTION_LIMIT", cls.connection_limit)),
            subscription_endpoints=env.get("FHIR_DMP_SUBSCRIPTION_ENDPOINTS") or None,
            subscription_retry_base=float(env.get("FHIR_DMP_SUBSCRIPTION_RETRY_BASE", cls.subscription_retry_base)),
            subscription_max_failures=int(env.get("FHIR_DMP_SUBSCRIPTION_MAX_FAILURES",
                                                  cls.subscription_max_failures)),
            subscription_delivery=env.get("FHIR_DMP_SUBSCRIPTION_DELIVERY", "on").lower() not in
            ("false", "0", "no", "off"),
            oidc_issuers=_list(env.get("FHIR_DMP_OIDC_ISSUER")),
            oidc_audiences=_list(env.get("FHIR_DMP_OIDC_AUDIENCE")),
            oidc_claims=_list(env.get("FHIR_DMP_OIDC_CLAIMS")),
            oidc_leeway=int(env.get("FHIR_DMP_OIDC_LEEWAY", cls.oidc_leeway)),
            oidc_jwks_lifespan=float(env.get("FHIR_DMP_OIDC_JWKS_LIFESPAN", cls.oidc_jwks_lifespan)),
            oidc_refresh_cooldown=float(env.get("FHIR_DMP_OIDC_REFRESH_COOLDOWN", cls.oidc_refresh_cooldown)),
            oidc_clients=Path(clients) if (clients := env.get("FHIR_DMP_OIDC_CLIENTS")) else None,
        )
        return cls(**{**values, **overrides})  # type: ignore[arg-type]


def _list(value: str | None) -> tuple[str, ...]:
    """A setting of several values: separated by commas or whitespace."""
    return tuple(v for v in (value or "").replace(",", " ").split() if v)


def _read_key(value: str | None) -> str | None:
    """The public key may be given inline (PEM) or as a path to a PEM file."""
    if not value:
        return None
    if "-----BEGIN" in value:
        return value
    return Path(value).read_text()
