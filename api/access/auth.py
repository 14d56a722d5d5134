"""Bearer tokens and SMART on FHIR scopes -> an Access policy for the request.

Scopes: `(patient|user|system)/(ImagingStudy|*).<letters>` with SMART v2 letters in order
(c create, r read, u update, d delete, s search) or v1 `read`/`write`/`*`. A permission granted
only by `patient/` scopes confines the caller to studies whose subject is the token's `patient`
claim. Malformed scopes grant nothing; so do granular scopes (`?param=...`), which narrow
access in ways this service does not evaluate."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from api.errors import AccessError
from api.errors import denied as refuse
from api.settings import Settings
from store.fhir.outcome import FORBIDDEN, UNAUTHENTICATED
from store.fhir.references import unversioned

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # R5's id datatype
_SCOPE = re.compile(r"(patient|user|system)/(ImagingStudy|\*)\.(c?r?u?d?s?|read|write|\*)")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class Access:
    """What the caller may do: letters granted without confinement, and letters granted only
    for one patient's studies."""

    subject: str | None = None
    client: str | None = None
    open: frozenset[str] = frozenset("cruds")
    confined: frozenset[str] = frozenset()
    patient: str | None = None
    error: AccessError | None = None  # a bad token: every operation answers UNAUTHENTICATED
    expires: float | None = None  # the token's `exp`: a WebSocket outlives its token

    @property
    def expired(self) -> bool:
        return self.expires is not None and time.time() >= self.expires

    def require(self, letters: str, operation: str) -> str | None:
        """Checks the caller may do `letters`; returns the patient it is confined to, if any."""
        if self.error is not None:
            raise self.error
        if self.expired:
            raise refuse(UNAUTHENTICATED, "the token expired")
        if all(letter in self.open for letter in letters):
            return None
        if self.patient and all(letter in self.open | self.confined for letter in letters):
            return self.patient
        raise refuse(FORBIDDEN, f"{operation} needs scope letters '{letters}' on ImagingStudy")


def owned(study: dict[str, Any] | None, patient: str | None) -> bool:
    """Whether a study's subject is `patient` (always true when there is no confinement): a
    reference to Patient/<patient>, of any version of it, as the search reads `patient`."""
    if patient is None:
        return True
    reference: object = (study or {}).get("subject", {}).get("reference")
    return isinstance(reference, str) and unversioned(reference) == f"Patient/{patient}"


def grants(scopes: str) -> tuple[set[str], set[str]]:
    """(letters granted openly, letters granted for the token's patient only)."""
    open_, confined = set[str](), set[str]()
    for scope in scopes.split():
        match = _SCOPE.fullmatch(scope)
        if match is None or not match[3]:
            continue
        letters = _V1.get(match[3], match[3])
        (confined if match[1] == "patient" else open_).update(letters)
    return open_, confined - open_


def _why(error: Exception) -> str:
    """What was wrong with a token, in the caller's terms: PyJWT's own words where they are
    (expired, wrong audience...), not a decoder's internals for a token that is not a JWT."""
    if isinstance(error, jwt.DecodeError) and not isinstance(error, jwt.InvalidSignatureError):
        return "not a well-formed JWT (header.payload.signature, each base64url-encoded JSON)"
    if not isinstance(error, jwt.PyJWTError):
        return "its algorithm does not fit the configured key"
    return str(error)


class Authenticator:
    """Verifies bearer JWTs with the configured key and turns them into Access."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jwks = (
            jwt.PyJWKSet.from_dict(json.loads(Path(settings.jwt_jwks).read_text()))
            if settings.jwt_jwks
            else None
        )
        self._pem = Path(settings.jwt_public_key).read_text() if settings.jwt_public_key else None
        # The key's own kind decides the one algorithm accepted (no algorithm confusion).
        self._pem_algorithm = (
            "ES256"
            if self._pem
            and "BEGIN PUBLIC KEY" in self._pem
            and isinstance(load_pem_public_key(self._pem.encode()), EllipticCurvePublicKey)
            else "RS256"
        )
        if settings.auth == "jwt" and not (settings.jwt_secret or self._pem or self._jwks):
            raise ValueError(
                "IMAGING_AUTH=jwt needs IMAGING_JWT_SECRET, IMAGING_JWT_PUBLIC_KEY "
                "or IMAGING_JWT_JWKS"
            )

    def access(self, authorization: str | None) -> Access:
        if self.settings.auth != "jwt":
            return Access()
        if not authorization or not authorization.lower().startswith("bearer "):
            return Access(error=refuse(UNAUTHENTICATED, "a bearer token is required"))
        try:
            claims = self._decode(authorization[7:].strip())
        except (jwt.PyJWTError, TypeError, ValueError) as error:  # a key of the wrong kind too
            return Access(error=refuse(UNAUTHENTICATED, f"invalid token: {_why(error)}"))
        open_, confined = grants(str(claims.get("scope", "")))
        claim = claims.get("patient")
        # A FHIR id or nothing: anything else (`pa/_history/1`, `Patient/pa`, a URL) would be
        # read as a reference by the search that confines the caller, and as an id by reads,
        # so the paths would disagree on whose studies these are (found black-box).
        patient = claim if isinstance(claim, str) and _FHIR_ID.fullmatch(claim) else None
        return Access(
            subject=str(claims.get("sub")) if claims.get("sub") else None,
            client=claims.get("client_id") or claims.get("azp"),
            open=frozenset(open_),
            confined=frozenset(confined if patient else ()),
            patient=patient,
            expires=float(claims["exp"]) + self.settings.jwt_leeway_seconds,
        )

    def _decode(self, token: str) -> dict[str, Any]:
        settings = self.settings
        key: Any
        if settings.jwt_secret:
            key, algorithms = settings.jwt_secret, ["HS256"]
        elif self._jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            matches = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
            if not matches:
                raise jwt.InvalidKeyError(f"no key with kid {kid!r} in the JWKS")
            key, algorithms = matches[0].key, [matches[0].algorithm_name]
        else:
            key, algorithms = self._pem, [self._pem_algorithm]
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": ["exp"], "verify_aud": bool(settings.jwt_audience)},
        )
