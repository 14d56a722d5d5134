"""The GraphQL-over-HTTP side of the /graphql view: content negotiation, refusals as GraphQL
JSON (api/http/answers.py), raw application/graphql bodies and Apollo's persisted queries
(api/http/persisted.py). A mixin in front of Strawberry's ASGI view, which keeps execution."""

from __future__ import annotations

import functools
import hashlib
from contextvars import ContextVar
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.responses import Response
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from api.access.audit import operation_audited, refused
from api.graphql.limits import Limits
from api.http import instance
from api.http.answers import CONTENT_TYPE, GRAPHQL_RESPONSE, JSON, Refusal, negotiate
from api.http.persisted import PersistedQueries
from store.fhir.outcome import BAD_USER_INPUT

_ACCEPTED = f"{GRAPHQL_RESPONSE} or {JSON}"
# The (hash, query) a request asked to register: kept once the query has run without a request
# error, so a document that does not even parse or validate takes no room in the store.
_register: ContextVar[tuple[str, str] | None] = ContextVar("persisted_register", default=None)
# The study of an instance-level $graphql request (/ImagingStudy/{id}/$graphql), else None.
_study: ContextVar[str | None] = ContextVar("instance_study", default=None)


@functools.lru_cache(maxsize=64)
def _media_type(content_type: str) -> str:
    # Strawberry's parser builds an email message per request; the same few headers come.
    return parse_content_type(content_type)[0]


def _refused(refusal: Refusal, media: str) -> Response:
    status, headers, body = refusal.answer(media)
    return _not_stored(Response(body, status_code=status, headers=headers))


def _not_stored(response: Response) -> Response:
    """Every answer is about patients (or about a request for them): no shared cache (a CDN
    in front of GET persisted queries, say) may keep one and serve it to another caller."""
    response.headers.setdefault("cache-control", "no-store")
    return response


if TYPE_CHECKING:  # the class this mixes into (api/http/app.py), so its methods are checked
    from strawberry.asgi import GraphQL

    from api.access.auth import Authenticator
    from api.graphql.context import Context
    from api.http.ops import Metrics

    _View = GraphQL[Context, None]
else:
    _View = object


class GraphQLOverHTTP(_View):
    """Overrides of Strawberry's AsyncBaseHTTPView for HTTP requests; WebSockets pass through.
    Every refusal is a GraphQL JSON body with `extensions.code` and an OperationOutcome."""

    persisted: PersistedQueries
    limits: Limits
    authenticator: Authenticator
    metrics: Metrics

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        view: Any = super()
        if self.is_websocket_request(request):
            return await view.run(request, context, root_value)
        study = _study.set(request.path_params.get("id"))
        try:
            return await self._run_http(view, request, context, root_value)
        finally:
            _study.reset(study)

    async def _run_http(self, view: Any, request: Any, context: Any, root_value: Any) -> Any:
        audited = operation_audited.set(False)
        try:
            return await self._answer_http(view, request, context, root_value)
        finally:
            operation_audited.reset(audited)

    def refused_operation(self, caller: Any, name: Any, code: str) -> None:
        """The audit record and count of a request refused before an operation of it ran;
        `caller` has the caller's `access` (the GraphQL context, on a WebSocket)."""
        refused(name, caller, code)
        self.metrics.observe("unknown", code, 0.0)

    def _refusal(self, request: Any, refusal: Refusal, media: str) -> Response:
        """The answer of a refusal; recorded when no operation of the request was (one
        refused for its shape, its media type, a mutation sent to one study's endpoint)."""
        if not operation_audited.get():
            access = self.authenticator.access(request.headers.get("authorization"))
            self.refused_operation(SimpleNamespace(access=access), None, refusal.code)
        return _refused(refusal, media)

    async def _answer_http(self, view: Any, request: Any, context: Any, root_value: Any) -> Any:
        adapter = self.request_adapter_class(request)
        media = JSON
        try:
            if self.should_render_graphql_ide(adapter):
                return await view.run(request, context, root_value)  # the GraphiQL page
            found = negotiate(request.headers.get("accept"))
            if found is None:
                raise Refusal(406, f"Accept: this endpoint answers {_ACCEPTED} only")
            media = request.state.media = found
            token = _register.set(None)
            try:
                response: Response = await view.run(request, context, root_value)
                register = _register.get()
            finally:
                _register.reset(token)
        except Refusal as refusal:
            return self._refusal(request, refusal, media)
        except HTTPException as error:  # Strawberry's own refusals (text/plain otherwise)
            if error.status_code == 405:
                return self._refusal(
                    request,
                    Refusal(
                        405,
                        f"method {request.method[:20]} is not served: GET (queries) and POST only",
                        issue="not-supported",
                        headers={"allow": "GET, POST"},
                    ),
                    media,
                )
            return self._refusal(request, Refusal(error.status_code, error.reason), media)
        if response.media_type == JSON:  # a GraphQL response (not a stream)
            response.headers["content-type"] = CONTENT_TYPE[media]
            _not_stored(response)
            if getattr(request.state, "request_error", False) and media == GRAPHQL_RESPONSE:
                response.status_code = 400  # refused by parsing or validation: nothing ran
            if register is not None and not getattr(request.state, "request_error", False):
                self.persisted.put(*register)
        return response

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A GET of a persisted query has no `query` either; Apollo Client 3 sends Accept: */*.
        # The IDE is the system endpoint's: one study's $graphql answers queries only.
        return (
            super().should_render_graphql_ide(request)
            and "extensions" not in request.query_params
            and _study.get() is None
        )

    def parse_json(self, data: str | bytes) -> Any:
        try:
            return self.decode_json(data)
        except ValueError:
            raise Refusal(
                400,
                "not JSON: a POST body of application/json, and the variables "
                "and extensions parameters of a GET, must be JSON",
            ) from None

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData:
        content_type = _media_type(request.content_type or "")
        if request.method == "GET":
            data = self._request_data(self.parse_query_params(request.query_params))
        elif content_type == JSON:
            data = self._request_data(self.parse_json(await request.get_body()))
        elif content_type == "application/graphql":
            data = await self._raw_graphql(request)
        else:
            raise Refusal(
                415,
                f"Content-Type: a POST body must be {JSON} (a GraphQL request "
                "object) or application/graphql (the query text), not "
                f"{content_type[:100] or 'none'}",
                issue="not-supported",
            )
        persisted = isinstance(data.extensions, dict) and "persistedQuery" in data.extensions
        data.query, register = self.persisted.resolve(
            data.extensions, data.query, self._caller(request) if persisted else ""
        )
        if register is not None and data.query is not None:  # a key comes with its query
            _register.set((register, data.query))  # the caller's own text, as it hashed it
        if (study := _study.get()) is not None:
            data.query = instance.rooted(data.query, study, self.limits)
        return data

    def _caller(self, request: AsyncHTTPRequestAdapter) -> str | None:
        """Whose persisted queries a request sees: the token's subject, client and patient
        with authentication on, None for a request without a valid token (it may not register);
        everyone's alike with authentication off."""
        authorization = request.headers.get("authorization")
        access = self.authenticator.access(authorization)
        if access.error is not None:
            return None
        who = "|".join((access.subject or "", access.client or "", access.patient or ""))
        if who == "||" and authorization:  # a token naming no one: it is its own caller
            who = hashlib.sha256(authorization.encode()).hexdigest()
        return who

    def _request_data(self, data: Any) -> GraphQLRequestData:
        """The request parameters of a JSON object (a POST body, a GET's parameters)."""
        if isinstance(data, list):
            raise Refusal(
                400,
                "a batch (a JSON array of operations) is not served: send one "
                "operation per request, as a JSON object",
            )
        if not isinstance(data, dict):
            raise Refusal(
                400,
                "a POST body of application/json must be a JSON object with "
                "query, and optionally variables, operationName and extensions",
            )
        query, name = data.get("query"), data.get("operationName")
        variables, extensions = data.get("variables"), data.get("extensions")
        for key, value, kind in (
            ("query", query, str),
            ("operationName", name, str),
            ("variables", variables, dict),
            ("extensions", extensions, dict),
        ):
            if not isinstance(value, kind | None):
                raise Refusal(
                    400, f"{key} must be {'a string' if kind is str else 'an object'} or null"
                )
        return GraphQLRequestData(
            query=query, variables=variables, operation_name=name, extensions=extensions
        )

    async def _raw_graphql(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData:
        """A POST whose body is the query itself (the FHIR GraphQL page allows it); variables
        and operationName may come in the URL, as for a GET."""
        try:
            query = (await request.get_body()).decode()
        except UnicodeDecodeError:
            raise Refusal(400, "an application/graphql body must be UTF-8 text") from None
        params = self.parse_query_params(request.query_params)
        variables, extensions = params.get("variables"), params.get("extensions")
        if not isinstance(variables, dict | None) or not isinstance(extensions, dict | None):
            raise Refusal(400, "the variables and extensions parameters must be JSON objects")
        name = params.get("operationName")
        return GraphQLRequestData(
            query=query,
            variables=variables,
            operation_name=name if isinstance(name, str) else None,
            extensions=extensions,
        )

    async def execute_single(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: Any,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        try:
            return await super().execute_single(
                request=request,
                request_adapter=request_adapter,
                sub_response=sub_response,
                context=context,
                root_value=root_value,
                request_data=request_data,
            )
        except HTTPException as error:
            cause = error.__cause__
            if isinstance(cause, InvalidOperationTypeError):
                # A GET must not write: 405 whatever the media type (the spec's MUST).
                raise Refusal(
                    405,
                    f"{error.reason}: send mutations with POST",
                    issue="not-supported",
                    headers={"allow": "POST"},
                ) from None
            if isinstance(cause, CannotGetOperationTypeError):
                # GetOperation failed: a GraphQL request error, so 200 under application/json.
                raise Refusal(
                    400, f"operationName: {error.reason}", BAD_USER_INPUT, legacy_status=200
                ) from None
            if isinstance(cause, MissingQueryError):
                raise Refusal(
                    400,
                    "no query: send `query` (or, with Apollo's persisted "
                    "queries, extensions.persistedQuery)",
                ) from None
            raise

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        answer: GraphQLHTTPResponse = await super().process_result(request, result)
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            # Parsing or validation refused it before execution: a request error, whose
            # response has no `data` entry (GraphQL spec, Response).
            state = request.state
            state.request_error = True
            if getattr(state, "media", JSON) == GRAPHQL_RESPONSE:
                answer.pop("data", None)
        if (study := _study.get()) is not None:
            answer = instance.unwrapped(answer, study)
        return answer
