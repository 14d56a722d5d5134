"""Bearer tokens for the tests of an app with JWT auth: the shared secret, audience and issuer,
and a token maker; `study`/`new_study` make the studies of patients p1 and p2 those tests use."""

from __future__ import annotations

import time
from typing import Any

import jwt

from store.interop import demo

SECRET = "test-secret-of-32-bytes-or-more!!"
AUDIENCE, ISSUER = "imaging-api", "https://login.example"


def token(scope: str, key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A signed JWT carrying `scope`, valid for five minutes; a claim given as None is left out."""
    now = int(time.time())
    body = {
        "sub": "user-1",
        "client_id": "viewer",
        "scope": scope,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": now + 300,
        "nbf": now - 5,
        **claims,
    }
    headers = {"kid": claims.pop("kid")} if "kid" in claims else None
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm, headers=headers
    )


def study(study_id: str, patient: str) -> dict[str, Any]:
    """A one-series, one-instance study of `patient`."""
    return demo.study(study_id, 1, 1, patient=patient)


def new_study(name: str, patient: str) -> dict[str, Any]:
    """A study to create: no id, since a patient-confined token may not choose one."""
    return {k: v for k, v in study(name, patient).items() if k != "id"}
