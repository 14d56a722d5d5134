"""FHIR's instance-level `$graphql`: `[base]/ImagingStudy/{id}/$graphql` runs a query whose root
is that study (`{ id status series { uid } }`).

The query is run as `{ ImagingStudy(id: "<id>") { <the query's selection> } }` through the one
ordinary pipeline (limits, cost, budget, the access gate, the audit), and the answer is unwrapped
again: `data` is the study's selection, error paths start below it. The wrapping is inserted into
the query text around each operation's selection set, so a line in an error's location is still
the caller's line. A study the caller may not read answers exactly as a missing one (NOT_FOUND),
since the gate answers both alike."""

from __future__ import annotations

from graphql import GraphQLError, OperationDefinitionNode, parse
from graphql.language.print_string import print_string
from strawberry.http import GraphQLHTTPResponse

from api.graphql.limits import Limits
from api.http.answers import Refusal
from store.fhir.outcome import BAD_USER_INPUT, NOT_FOUND, fail

ROOT = "ImagingStudy"


def rooted(query: str | None, study_id: str, limits: Limits) -> str | None:
    """`query` with every operation run on study `study_id`. A query the limits or the parser
    refuse is left as it is, to be refused the usual way."""
    if query is None or len(query) > limits.max_length:
        return query
    try:
        document = parse(query, max_tokens=limits.max_tokens)
    except GraphQLError:
        return query
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if any(o.operation.value != "query" for o in operations):
        raise Refusal(
            400,
            "the $graphql of one study runs queries only: send mutations and "
            "subscriptions to /graphql (or /$graphql)",
            BAD_USER_INPUT,
            legacy_status=200,
        )
    opening = "{" + f"{ROOT}(id: {print_string(study_id)}) "
    edits = sorted(
        edit
        for o in operations
        if o.selection_set.loc is not None
        for edit in ((o.selection_set.loc.start, opening), (o.selection_set.loc.end, "}"))
    )
    for at, text in reversed(edits):  # from the end, so earlier offsets stay valid
        query = query[:at] + text + query[at:]
    return query


def unwrapped(answer: GraphQLHTTPResponse, study_id: str) -> GraphQLHTTPResponse:
    """The response of a rooted query as the caller's query on the study would have it."""
    errors = answer.get("errors") or []
    for error in errors:
        if not isinstance(error, dict):  # formatted errors are objects; the type says less
            continue
        path = error.get("path")
        if path and path[0] == ROOT:
            if len(path) > 1:
                error["path"] = path[1:]
            else:  # the study itself (NOT_FOUND), at the text the server inserted
                del error["path"]
                error.pop("locations", None)
    data = answer.get("data")
    if isinstance(data, dict):
        study = data.get(ROOT)  # the rooted field answers one study, or null
        answer["data"] = study if isinstance(study, dict) else None
        if answer["data"] is None and not errors:
            missing = fail(NOT_FOUND, ROOT, f"no ImagingStudy with id '{study_id}'")
            answer["errors"] = [
                {
                    "message": missing.message,
                    "extensions": {"code": missing.code, "resource": missing.outcome()},
                }
            ]
    return answer
