"""GraphQL-over-HTTP answers (graphql/graphql-over-http, spec/GraphQLOverHTTP.md): which media
type a client gets, and refusals as GraphQL JSON bodies with the status codes of that media type,
which Apollo, urql and graphql-request can read (a text/plain 400 is a bare network error to
them)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from api.errors import refusal
from store.fhir.outcome import BAD_REQUEST

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
# What each acceptable Accept entry is answered with. Wildcards (curl, browsers, Apollo Client 3
# send */*) get application/json, whose 200-for-every-GraphQL-answer rule legacy clients rely
# on; the spec's newer default would answer their validation errors with 400.
_SERVED = {GRAPHQL_RESPONSE: GRAPHQL_RESPONSE, JSON: JSON, "application/*": JSON, "*/*": JSON}
CONTENT_TYPE = {GRAPHQL_RESPONSE: f"{GRAPHQL_RESPONSE}; charset=utf-8", JSON: JSON}


def negotiate(accept: str | None) -> str | None:
    """The media type to answer with: the Accept entry of highest quality this server serves
    (the first listed on a tie), application/json without an Accept header, None when the
    header names nothing served (the spec recommends 406 then)."""
    if accept is None or not accept.strip():
        return JSON
    best, best_quality = None, 0.0
    for media, quality in weighted(accept):
        served = _SERVED.get(media)
        if served is not None and quality > best_quality:
            best, best_quality = served, quality
    return best


def weighted(header: str) -> list[tuple[str, float]]:
    """The entries of an Accept-like header (Accept, Accept-Encoding) with their quality, in
    the order listed: names lower-cased, `q` clamped to 0..1, an unreadable `q` as 0 (refused)."""
    entries = []
    for entry in header.split(","):
        name, _, parameters = entry.partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        entries.append((name.strip().lower(), quality))
    return entries


class Refusal(Exception):
    """A request refused before it ran. `status` is its HTTP status under
    application/graphql-response+json; `legacy_status`, when set, the one under
    application/json (the spec keeps 200 there for a request the GraphQL layer refuses)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = BAD_REQUEST,
        issue: str = "invalid",
        *,
        legacy_status: int | None = None,
        diagnostics: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.issue = issue
        self.legacy_status = legacy_status
        self.diagnostics = diagnostics
        self.headers = dict(headers or {})

    def answer(self, media: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of the refusal in `media`."""
        status = self.legacy_status if media == JSON and self.legacy_status else self.status
        body = orjson.dumps(refusal(self.message, self.code, self.issue, self.diagnostics))
        return status, {"content-type": CONTENT_TYPE[media], **self.headers}, body


def answer_media(accept: str | None) -> str:
    """The media type of a refusal made before negotiation counts (a middleware's): the
    client's choice when it is one served, else application/json."""
    return negotiate(accept) or JSON
