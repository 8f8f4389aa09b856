"""`fhir-dmp dev-idp`: a local OpenID Connect provider for development and tests, never for production.

It serves discovery, a JWKS of two RSA keys (the signing one and the one before it: `POST /rotate` makes a new
signing key and withdraws the oldest, as a real provider's rotation does), and a token endpoint: client credentials
(client_secret_basic or _post) and the authorization code with PKCE (S256 only). `/authorize` asks nobody: the user
is `login_hint`, one of the identities of `data/dev-idp.json`, and the code is given to the redirect URI at once.
Tokens are RS256 JWTs (RFC 9068 shape: iss, aud, sub, client_id, scope, iat, exp, jti) carrying the identity's
claims. What the FHIR server's smart-configuration then advertises, it delivers: for `openid`, an `id_token` signed
with the same keys (aud the client, `nonce`, `at_hash`, and `fhirUser` when `fhirUser` is asked); for
`launch/patient`, the token response's `patient`. It knows no FHIR id, so `/authorize` takes them as development
parameters: `launch_patient` (the Patient id; required with `launch/patient`) and `fhir_user` (the user's resource,
`Practitioner/123`; a patient's defaults to `Patient/<launch_patient>`; required with `openid fhirUser`).
The private keys live in `--key-dir` (keys.json, newest last) so that tests can forge what a provider's key signs;
tokens and codes live in memory. Built on PyJWT, cryptography and Flask.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
import uuid
from pathlib import Path
from threading import Lock
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, redirect, request

IDENTITIES = Path(__file__).resolve().parent.parent / "data" / "dev-idp.json"
CODE_SECONDS = 60
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id
FHIR_USER = re.compile(r"(https?://\S+/)?[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")  # SMART: absolute or relative URL


class KeyRing:
    """The provider's RSA keys, newest last; the JWKS publishes the last two, the newest signs."""

    def __init__(self, directory: Path | None) -> None:
        self.file = directory / "keys.json" if directory else None
        self.lock = Lock()
        self.keys: list[tuple[str, str]] = []  # (kid, private PEM)
        if self.file and self.file.exists():
            self.keys = [(k["kid"], k["pem"]) for k in json.loads(self.file.read_text())["keys"]]
        while len(self.keys) < 2:
            self._add()
        self._save()

    def _add(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        self.keys.append((f"dev-{uuid.uuid4().hex[:12]}", pem))

    def _save(self) -> None:
        if self.file:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.write_text(json.dumps({"keys": [{"kid": k, "pem": p} for k, p in self.keys]}))

    def rotate(self) -> str:
        with self.lock:
            self._add()
            self.keys = self.keys[-2:]
            self._save()
            return self.keys[-1][0]

    def signing(self) -> tuple[str, str]:
        return self.keys[-1]

    def jwks(self) -> dict:
        out = []
        for kid, pem in self.keys[-2:]:
            public = serialization.load_pem_private_key(pem.encode(), None).public_key()
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": out}


def create_idp(issuer: str, audience: str, key_dir: Path | None = None, ttl: int = 3600,
               identities: Path = IDENTITIES) -> Flask:
    """The provider's app; `issuer` is its public URL (the `iss` of its tokens), `audience` their `aud`."""
    issuer = issuer.rstrip("/")
    data = json.loads(identities.read_text(encoding="utf-8"))
    users, clients = data["users"], data["clients"]
    ring, codes = KeyRing(key_dir), dict[str, dict]()
    app = Flask("fhir_dmp_dev_idp")

    def mint(subject: str, client_id: str, scope: str, extra: dict[str, Any]) -> dict:
        now = int(time.time())
        kid, pem = ring.signing()
        body = {**extra, "iss": issuer, "aud": audience, "sub": subject, "client_id": client_id, "scope": scope,
                "iat": now, "nbf": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
        token = jwt.encode(body, pem, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": scope}

    def id_token(subject: str, client_id: str, grant: dict, access_token: str) -> str:
        """OpenID Connect Core 2 and 3.1.3.6 (at_hash), SMART's fhirUser claim when `fhirUser` was granted."""
        now = int(time.time())
        kid, pem = ring.signing()
        half = hashlib.sha256(access_token.encode()).digest()[:16]
        body = {"iss": issuer, "sub": subject, "aud": client_id, "iat": now, "exp": now + ttl, "auth_time": now,
                "at_hash": base64.urlsafe_b64encode(half).rstrip(b"=").decode(),
                **({"nonce": grant["nonce"]} if grant["nonce"] is not None else {}),
                **({"fhirUser": grant["fhir_user"]} if "fhirUser" in grant["scope"].split() else {})}
        return jwt.encode(body, pem, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})

    def error(status: int, code: str, text: str) -> Response:
        answer = jsonify({"error": code, "error_description": text})
        answer.status_code = status
        return answer

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        return jsonify({
            "issuer": issuer, "jwks_uri": f"{issuer}/jwks", "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token", "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "code_challenge_methods_supported": ["S256"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "scopes_supported": sorted({s for c in clients.values() for s in c["scope"].split()}),
        })

    @app.get("/jwks")
    def jwks() -> Response:
        return jsonify(ring.jwks())

    @app.post("/rotate")
    def rotate() -> Response:
        return jsonify({"signing_kid": ring.rotate(), "published": [k for k, _ in ring.keys]})

    @app.get("/authorize")
    def authorize() -> Response:
        args = request.args
        client, user = args.get("client_id", ""), args.get("login_hint", "")
        if args.get("response_type") != "code" or client not in clients or not args.get("redirect_uri"):
            return error(400, "invalid_request", "response_type=code, a known client_id and a redirect_uri")
        if args.get("code_challenge_method") != "S256" or not args.get("code_challenge"):
            return error(400, "invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256")
        if user not in users:
            return error(400, "access_denied", f"login_hint must name a development identity: {sorted(users)}")
        scope = _granted(args.get("scope"), clients[client])
        context = _context(scope.split(), args, users[user])
        if isinstance(context, str):
            return error(400, "invalid_request", context)
        code = secrets.token_urlsafe(24)
        codes[code] = {"client": client, "user": user, "redirect_uri": args["redirect_uri"],
                       "challenge": args["code_challenge"], "scope": scope, "nonce": args.get("nonce"),
                       "until": time.time() + CODE_SECONDS, **context}
        query = {"code": code, **({"state": args["state"]} if "state" in args else {})}
        return redirect(f"{args['redirect_uri']}{'&' if '?' in args['redirect_uri'] else '?'}{urlencode(query)}")

    @app.post("/token")
    def token() -> Response:
        form = request.form
        client_id, secret = _client_auth(form)
        if form.get("grant_type") == "client_credentials":
            known = clients.get(client_id)
            if known is None or "secret" not in known or not secrets.compare_digest(secret or "", known["secret"]):
                return error(401, "invalid_client", "unknown client or wrong secret")
            return jsonify(mint(client_id, client_id, _granted(form.get("scope"), known), {}))
        if form.get("grant_type") == "authorization_code":
            grant = codes.pop(form.get("code", ""), None)
            if grant is None or grant["until"] < time.time() or grant["client"] != client_id \
                    or grant["redirect_uri"] != form.get("redirect_uri"):
                return error(400, "invalid_grant", "unknown, used or expired code, or another client/redirect_uri")
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not secrets.compare_digest(digest, grant["challenge"]):
                return error(400, "invalid_grant", "code_verifier does not match the code_challenge (S256)")
            claims = dict(users[grant["user"]])
            subject = claims.pop("sub")
            answer = mint(subject, client_id, grant["scope"], claims)
            if grant["patient"] is not None:  # SMART: the launch context is a parameter of the token response
                answer["patient"] = grant["patient"]
            if "openid" in grant["scope"].split():
                answer["id_token"] = id_token(subject, client_id, grant, answer["access_token"])
            return jsonify(answer)
        return error(400, "unsupported_grant_type", "client_credentials or authorization_code")

    return app


def _client_auth(form: Any) -> tuple[str, str | None]:
    """client_secret_basic (Authorization: Basic), else client_secret_post or a public client's client_id."""
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        return auth.username or "", auth.password
    return form.get("client_id", ""), form.get("client_secret")


def _context(asked: list[str], args: Any, user: dict) -> dict | str:
    """The launch context and fhirUser a code carries (or why it cannot be given): this provider picks no patient
    and knows no FHIR id, so the client names them (`launch_patient`, `fhir_user`), which only a development
    provider may let it do."""
    patient, fhir_user = args.get("launch_patient"), args.get("fhir_user")
    if patient is not None and not FHIR_ID.fullmatch(patient):
        return "launch_patient must be a FHIR Patient id"
    if fhir_user is not None and not FHIR_USER.fullmatch(fhir_user):
        return "fhir_user must be the URL of a FHIR resource (Practitioner/123, or absolute)"
    if "launch/patient" in asked and patient is None:
        return "launch/patient: this development provider picks no patient; name its FHIR id in launch_patient"
    if fhir_user is None and patient is not None and "ins" in user:  # a patient is their own Patient
        fhir_user = f"Patient/{patient}"
    if "openid" in asked and "fhirUser" in asked and fhir_user is None:
        return "openid fhirUser: this development provider knows no FHIR resource for the user; name it in fhir_user"
    return {"patient": patient if "launch/patient" in asked else None, "fhir_user": fhir_user}


def _granted(requested: str | None, client: dict) -> str:
    """The scopes asked for, as asked (a development provider asks nobody's consent); the client's own scopes
    when it asks for none."""
    return requested if requested is not None else client["scope"]
