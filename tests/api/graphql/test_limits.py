"""Limits that are cheap to check and count what costs: a linear limit walk, a cost that prices
what a field returns (fhirJson, history, series at their cap, variable defaults), query text
refused unparsed over its length, and a document cache bounded by the text it keeps."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
import pytest
from graphql import GraphQLError, parse
from graphql.language import SelectionSetNode, Visitor, visit

from api.graphql.documents import DocumentCache, tokens
from api.graphql.limits import Limits, limit_errors
from api.graphql.schema import limits
from api.http.app import create_app, open_repository
from api.settings import Settings
from store.fhir import edit
from store.interop import demo
from store.mongo import appends
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error, expressions
from tests.support.loop import LoopTicks


def fragments(levels: int) -> str:
    """F0..F{levels-1}, each spreading the next ten times: 10**levels fields when expanded."""
    spreads = [f"fragment F{n} on ImagingStudy {{ {f' ...F{n + 1}' * 10} }}" for n in range(levels)]
    return (
        '{ ImagingStudy(id: "x") { ...F0 } } '
        + " ".join(spreads)
        + f" fragment F{levels} on ImagingStudy {{ id }}"
    )


def rejected(body: dict[str, Any], what: str) -> dict[str, Any]:
    extensions = error(body)["extensions"]
    assert extensions["code"] == "QUERY_REJECTED", body
    assert f"query rejected: {what} " in error(body)["message"]
    return extensions


class _Counted(tuple[Any, ...]):
    """A selection list that counts how often it is walked."""

    walked = 0

    def __iter__(self) -> Any:
        _Counted.walked += 1
        return super().__iter__()


def test_the_limit_walk_reads_each_selection_set_once() -> None:
    document = parse(fragments(6))

    class Count(Visitor):
        sets = 0

        def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
            Count.sets += 1
            # AST nodes are frozen; the counter replaces the list in place for this test.
            object.__setattr__(node, "selections", _Counted(node.selections))

    visit(document, Count())
    _Counted.walked = 0
    [refused] = limit_errors(Limits(max_cost=10), document, {})
    assert (refused.extensions or {})["measured"] == 10**6 + 1
    # Linear in the document: not once per expanded use (10**6 times and more).
    assert _Counted.walked <= Count.sets


async def test_nested_fragments_are_refused_before_any_store_access(
    gql: Gql, untouched: list[str]
) -> None:
    body = await gql(fragments(8))  # 10**8 fields expanded, 800 characters written
    assert rejected(body, "cost")["measured"] == 10**8 + 1
    assert untouched == []


async def test_fhir_json_costs_the_study_it_returns(gql: Gql, untouched: list[str]) -> None:
    history = 'h{n}: ImagingStudyHistory(id: "x") {{ fhirJson }}'
    body = await gql("{ " + " ".join(history.format(n=n) for n in range(6)) + " }")
    rejected(body, "cost")
    rejected(await gql('{ ImagingStudyHistory(id: "x") { fhirJson } }'), "cost")
    rejected(await gql("{ ImagingStudyList { fhirJson } }"), "cost")
    assert untouched == []
    # A few whole studies at a time are fine.
    assert "errors" not in await gql('{ ImagingStudyHistory(id: "x", _count: 5) { fhirJson } }')
    assert "errors" not in await gql("{ ImagingStudyList(_count: 5) { fhirJson } }")


async def test_series_are_priced_at_the_series_cap(gql: Gql, untouched: list[str]) -> None:
    series = (
        "s{n}: ImagingStudyList {{ series {{ uid number description "
        "modality {{ coding {{ code }} }} }} }}"
    )
    body = await gql("{ " + " ".join(series.format(n=n) for n in range(30)) + " }")
    assert rejected(body, "cost")["measured"] > 30 * 20 * 1_000
    # One series may hold every instance of a study.
    body = await gql("{ ImagingStudyList(_count: 50) { series(_count: 1) { instance { uid } } } }")
    rejected(body, "cost")
    assert untouched == []


async def test_a_variable_default_counts_like_the_literal(gql: Gql, untouched: list[str]) -> None:
    query = "query($c: Int = 1000) { ImagingStudyList(_count: $c) { series { instance { uid } } } }"
    rejected(await gql(query), "cost")
    assert untouched == []
    # A value sent for the variable wins over its default.
    assert "errors" not in await gql(query, c=1)


async def test_a_document_is_measured_once_per_set_of_small_variable_values(
    gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same text with the same values measures the same: walked once, not on every
    request; other values (or values too many to key) are measured again, and refused."""
    from api.graphql import documents

    walks: list[dict[str, Any]] = []
    measure = documents.limit_errors

    def counted(limits: Limits, document: Any, variables: dict[str, Any]) -> Any:
        walks.append(variables)
        return measure(limits, document, variables)

    monkeypatch.setattr(documents, "limit_errors", counted)
    query = "query($c: Int) { ImagingStudyList(_count: $c) { series { instance { uid } } } }"
    for _ in range(3):
        assert "errors" not in await gql(query, c=1)
    assert walks == [{"c": 1}]
    rejected(await gql(query, c=1000), "cost")  # not within the limits: never kept
    rejected(await gql(query, c=1000), "cost")
    assert walks == [{"c": 1}, {"c": 1000}, {"c": 1000}]
    many = "query($p: [String!]) { ImagingStudyList(patient: $p, _count: 1) { id } }"
    for _ in range(2):
        assert "errors" not in await gql(many, p=[f"Patient/{n}" for n in range(40)])
    assert len(walks) == 5  # too many values to key: measured each time


async def test_a_refused_text_is_validated_once_and_refused_alike_again(
    gql: Gql, monkeypatch: pytest.MonkeyPatch, untouched: list[str]
) -> None:
    """Validation depends on the text alone: a text it refused is remembered with its errors,
    so sending it again (a flood of one heavy text, found black-box) costs a lookup."""
    from api.graphql import documents

    checked: list[object] = []
    validated = documents._validated

    def counted(*args: Any) -> Any:
        checked.append(args[1])
        return validated(*args)

    monkeypatch.setattr(documents, "_validated", counted)
    query = "{ ImagingStudyList(_count: 1) { id nope } }"
    first, second = await gql(query), await gql(query)
    assert first == second
    assert first["errors"][0]["message"].startswith("Cannot query field")
    assert len(checked) == 1
    assert "errors" not in await gql("{ ImagingStudyList(_count: 1) { id } }")
    assert len(checked) == 2


async def test_more_fragment_definitions_than_the_cap_are_refused_unvalidated(
    gql: Gql, monkeypatch: pytest.MonkeyPatch, untouched: list[str]
) -> None:
    """graphql-core walks every fragment again for its variables: 900 unused fragments (40 KB)
    took 0.2 s of validation each. Past MAX_FRAGMENTS the document is refused before it."""
    from api.graphql import documents

    checked: list[object] = []
    monkeypatch.setattr(documents, "_validated", lambda *args: checked.append(args) or [])
    cap = documents.MAX_FRAGMENTS

    def document(count: int) -> str:
        spreads = " ".join(f"...F{n}" for n in range(count))
        fragments = " ".join(f"fragment F{n} on ImagingStudy {{ id }}" for n in range(count))
        return f"{{ ImagingStudyList(_count: 1) {{ {spreads} }} }} {fragments}"

    extensions = rejected(await gql(document(cap + 1)), "fragment definitions")
    assert (extensions["limit"], extensions["measured"]) == (cap, cap + 1)
    assert checked == []
    assert "errors" not in await gql(document(cap))
    assert len(checked) == 1


def test_a_parsed_document_is_freed_without_the_cyclic_collector() -> None:
    """graphql-core links tokens both ways; every new document was one large reference cycle
    whose collection held the whole process (the event loop too) while clients sent new large
    texts. Parsed here, it is a tree, and a remembered refusal keeps none of it."""
    import gc

    from api.graphql.documents import Refused, _parse

    text = "{ ImagingStudyList(_count: 1) { id " + "...on ImagingStudy { id status } " * 50 + "} }"
    gc.collect()
    gc.disable()
    try:
        document = _parse(text, 10_000)
        assert document is not None
        assert not isinstance(document, GraphQLError)
        refused = Refused()
        refused.keep(text, [GraphQLError("refused", document.definitions[0])])
        del document
        assert gc.collect() == 0
        [again] = refused.errors(text) or []
        assert again.locations is not None
        assert again.locations[0].line == 1
        assert again.nodes is None
    finally:
        gc.enable()


async def test_new_texts_past_the_shared_allowance_are_refused_and_seen_ones_served(
    gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing and validating new texts holds the interpreter lock: all requests together get
    NEW_TEXT_SECONDS of it per second. Past it a new text is refused at once (and not
    remembered as refused), while a text seen before is served from the cache."""
    from api.graphql import documents

    seen = "{ ImagingStudyList(_count: 1) { id } }"
    assert "errors" not in await gql(seen)
    monkeypatch.setattr(documents, "NEW_TEXTS", documents.Allowance(0.0, 0.0))
    assert "errors" not in await gql(seen)
    new = "{ ImagingStudyList(_count: 2) { id status } }"
    body = await gql(new)
    extensions = rejected(
        body,
        "milliseconds per second of parsing and validating query texts new to the server, "
        "by all requests together",
    )
    assert extensions["limit"] == int(documents.NEW_TEXT_SECONDS * 1000)
    assert "retry in a second" in body["errors"][0]["message"]
    monkeypatch.setattr(documents, "NEW_TEXTS", documents.Allowance(1.0, 1.0))
    assert "errors" not in await gql(new)  # the refusal was not remembered


def test_the_allowance_refills_at_its_rate_up_to_its_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api.graphql import documents

    clock = iter([0.0, 0.0, 0.0, 2.0, 100.0])
    monkeypatch.setattr(documents.time, "monotonic", lambda: next(clock))
    allowance = documents.Allowance(0.25, 1.0)  # reads the clock: 0.0
    allowance.charge(1.5)  # 0.0
    assert allowance.left() == pytest.approx(-0.5)  # 0.0
    assert allowance.left() == pytest.approx(0.0)  # 2 s later: 0.5 refilled
    assert allowance.left() == pytest.approx(1.0)  # never past the burst


async def test_a_refusal_is_not_hidden_behind_the_operation_name(http: httpx.AsyncClient) -> None:
    """A text over the token limit with operationName: the answer is the refusal, not
    "Unknown operation named" about the unparsed text (found black-box)."""
    text = " ".join(f"query O{n} {{ __typename }}" for n in range(2_400))
    response = await http.post("/graphql", json={"query": text, "operationName": "O5"})
    [problem] = response.json()["errors"]
    assert problem["extensions"]["code"] == "QUERY_REJECTED"
    assert problem["message"].startswith("query rejected: tokens")


async def test_a_syntax_error_is_parsed_once_off_the_event_loop(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strawberry, given no document, parsed a text with a syntax error again to report it, on
    the event loop (0.1 s for 27 KB): the pool's parse now reports it itself."""
    import graphql.language.parser as parser

    threads: list[str] = []
    parse_document = parser.Parser.parse_document

    def spy(self: Any) -> Any:
        threads.append(threading.current_thread().name)
        return parse_document(self)

    monkeypatch.setattr(parser.Parser, "parse_document", spy)
    text = "{ ImagingStudyList(_count: 1) { " + "id " * 2_000 + "}"  # one brace short
    response = await http.post("/graphql", json={"query": text})
    [problem] = response.json()["errors"]
    assert problem["message"].startswith("Syntax Error: Expected Name, found <EOF>")
    assert problem["locations"] == [{"line": 1, "column": len(text) + 1}]
    assert len(threads) == 1
    assert threads[0] != threading.main_thread().name


async def test_legitimate_queries_still_pass(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("v", 3, 4))
    viewer = await gql(
        '{ ImagingStudy(id: "v") { id fhirJson series { uid modality { coding '
        "{ code } } instance { uid number sopClass { code } } } } }"
    )
    assert "errors" not in viewer
    worklist = await gql(
        "{ ImagingStudyList(_count: 100) { id status series { uid numberOfInstances } } }"
    )
    assert "errors" not in worklist


async def test_an_over_long_query_is_refused_unparsed(gql: Gql, untouched: list[str]) -> None:
    body = await gql("{" + " " * 100_000)  # a syntax error, were it parsed
    extensions = rejected(body, "query length")
    assert (extensions["limit"], extensions["measured"]) == (100_000, 100_001)
    assert untouched == []


def test_the_document_cache_is_bounded_by_the_tokens_it_keeps() -> None:
    cache = DocumentCache(size=100, budget=10)
    one, two, three = (parse(f"{{ {name} }}") for name in ("a", "b", "c"))
    assert tokens("{ a }") == 3
    for text, document in (("{ a }", one), ("{ b }", two), ("{ c }", three)):
        cache.keep(text, document)
    assert list(cache) == ["{ a }", "{ b }", "{ c }"]
    assert cache.kept == 9
    assert cache.get_document("{ a }") is one  # and now the most recently used
    cache.keep("{ d }", parse("{ d }"))  # 12 tokens would pass the budget: the LRU goes
    assert list(cache) == ["{ c }", "{ a }", "{ d }"]
    cache.keep("{ " + "x " * 20 + "}", parse("{ x }"))  # larger than the cache: not kept
    assert list(cache) == ["{ c }", "{ a }", "{ d }"]


def test_the_limits_come_from_the_settings() -> None:
    configured = limits(Settings(max_series=10, max_instances=100, max_query_length=50))
    assert (configured.max_series, configured.max_instances, configured.max_length) == (10, 100, 50)
    assert configured.whole_study < limits(Settings()).whole_study
    assert Limits().max_series == Settings().max_series


ADD_SERIES = """mutation($id: ID!, $s: [ImagingStudySeriesInput!]!) {
  ImagingStudyAddSeries(id: $id, series: $s) { numberOfSeries } }"""
ADD = """mutation($id: ID!, $s: String!, $i: [ImagingStudySeriesInstanceInput!]!) {
  ImagingStudyAddInstances(id: $id, seriesUid: $s, instances: $i) { numberOfInstances } }"""


async def test_a_study_lists_at_most_max_series(gql: Gql, store: Repository) -> None:
    store.max_series = 2
    body = await gql(CREATE, res=demo.study("many", 3, 1))
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert expressions(body) == ["ImagingStudy.series"]
    assert "at most 2 series; this one lists 3" in error(body)["message"]
    assert "errors" not in await gql(CREATE, res=demo.study("two", 2, 1))
    body = await gql(ADD_SERIES, id="two", s=[demo.series("two", 3, 1)])
    assert "at most 2 series; this write would make it 3" in error(body)["message"]
    # A study stored under a higher cap keeps taking instances; it cannot grow in series.
    store.max_series = 1
    body = await gql(ADD, id="two", s=demo.uid("two", 1), i=[demo.instance("two", 1, 2)])
    assert body["data"]["ImagingStudyAddInstances"]["numberOfInstances"] == 3


def test_the_series_cap_is_configured() -> None:
    settings = Settings.from_env({"IMAGING_MAX_SERIES": "7"})
    assert settings.max_series == 7
    _, repo = open_repository(settings)
    assert repo.max_series == 7


async def test_search_values_are_capped_per_argument_in_total_and_in_length(
    gql: Gql, untouched: list[str]
) -> None:
    many = [f"CT{n}" for n in range(1_000)]  # a thousand OR'ed values
    body = await gql("query($m: [String!]) { ImagingStudyList(modality: $m) { id } }", m=many)
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert expressions(body) == ["modality"]
    # The argument is named once, by the message's lead (issue 11).
    assert error(body)["message"].startswith("modality: at most 100 search values are allowed")
    body = await gql(
        "query($m: [String!]) { ImagingStudyList(modality: $m) { id } }", m=["CT"] * 101
    )
    assert expressions(body) == ["modality"]
    # A comma is part of the value (graphql.html): 2 MB of commas is one value, too long.
    body = await gql(
        "query($m: [String!]) { ImagingStudyList(modality: $m) { id } }",
        m=[",".join(f"CT{n}" for n in range(200_000))],
    )
    assert error(body)["message"].startswith(
        "modality: a search value may be at most 1024 characters; one has 1"
    )
    body = await gql(
        "query($m: [String!], $s: [String!], $i: [String!], $b: [String!]) {"
        " ImagingStudyList(modality: $m, status: $s, identifier: $i, "
        "body_site: $b) { id } }",
        m=["CT"] * 100,
        s=["final"] * 100,
        i=["x"] * 100,
        b=["y"],
    )
    assert expressions(body) == ["status"]  # the arguments are counted in schema order
    assert error(body)["message"] == (
        "status: a search may have at most 300 values over all "
        "its arguments; this argument takes it to 301"
    )
    body = await gql(
        '{ ImagingStudyConnection(identifier: ["a", "' + "x" * 1_025 + '"]) { count } }'
    )
    assert expressions(body) == ["identifier"]
    assert "at most 1024 characters; one has 1025" in error(body)["message"]
    assert untouched == []
    # Up to the caps, the search runs.
    body = await gql(
        "query($m: [String!]) { ImagingStudyList(modality: $m) { id } }", m=["CT"] * 100
    )
    assert body == {"data": {"ImagingStudyList": []}}


async def test_an_if_none_exist_search_is_capped_too(gql: Gql) -> None:
    condition = "identifier=" + ",".join(f"v{n}" for n in range(101))
    body = await gql(CREATE, res=demo.study("ine", 1, 1), ine=condition)
    assert expressions(body) == ["ifNoneExist"]
    body = await gql(CREATE, res=demo.study("ine", 1, 1), ine="identifier=" + "v" * 200_000)
    assert expressions(body) == ["ifNoneExist"]


def test_the_search_caps_are_configured() -> None:
    settings = Settings.from_env(
        {
            "IMAGING_SEARCH_MAX_VALUES": "5",
            "IMAGING_SEARCH_MAX_TOTAL_VALUES": "6",
            "IMAGING_SEARCH_MAX_VALUE_LENGTH": "7",
        }
    )
    assert (
        settings.search_max_values,
        settings.search_max_total_values,
        settings.search_max_value_length,
    ) == (5, 6, 7)


async def test_metrics_label_only_known_root_fields(gql: Gql, http: httpx.AsyncClient) -> None:
    for n in range(20):
        await gql(f'query Op{n} {{ ImagingStudy(id: "x") {{ id }} }}')
        await gql(f'query {{ alias{n}: ImagingStudy(id: "x") {{ id }} }}')
        await gql(f"{{ field{n} }}")
        await gql(f'{{ ImagingStudy(id: "x") {{ id }} f{n}: ImagingStudyList {{ id }} }}')
    metrics = (await http.get("/metrics")).text
    labels = set(re.findall(r'imaging_requests_total\{operation="([^"]*)"', metrics))
    assert labels == {"ImagingStudy", "unknown", "multiple"}
    assert 'imaging_requests_total{operation="ImagingStudy",outcome="OK"} 40.0' in metrics


async def test_the_write_rules_run_off_the_event_loop(
    gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []

    def spy(rule: Any) -> Any:
        def run(*args: Any) -> Any:
            threads.append(threading.get_ident())
            return rule(*args)

        return run

    monkeypatch.setattr(edit, "create", spy(edit.create))
    monkeypatch.setattr(edit, "add_series", spy(edit.add_series))
    # A plain append checks only the new parts (store/mongo/appends.py), off the loop too.
    monkeypatch.setattr(appends, "plan_series", spy(appends.plan_series))
    assert "errors" not in await gql(CREATE, res=demo.study("loop", 1, 2))
    assert "errors" not in await gql(ADD_SERIES, id="loop", s=[demo.series("loop", 2, 1)])
    assert len(threads) == 2
    assert threading.get_ident() not in threads


@pytest.mark.parametrize(
    "value", [["a"] * 1_001, [list(range(40))] * 600, {"deep": [["x"] * 1_000] * 21}]
)
async def test_huge_query_variables_are_refused_before_coercion(
    gql: Gql, value: Any, untouched: list[str]
) -> None:
    body = await gql("query($v: [String!]) { ImagingStudyList(_id: $v) { id } }", v=value)
    assert body["errors"][0]["extensions"]["code"] == "QUERY_REJECTED"
    assert "variable" in body["errors"][0]["message"]
    assert untouched == []


async def test_thirty_large_variables_are_refused_before_authentication(store: Repository) -> None:
    """Thirty lists of 49,999 values (6 MB, each under the instance cap) held the loop 3 s,
    with no token at all, before the search-value cap refused them."""
    app = create_app(
        Settings(seed=False, auth="jwt", jwt_secret="s" * 32, allowed_hosts=("test",)), store
    )
    names = [f"v{n}" for n in range(30)]
    query = (
        "query("
        + ", ".join(f"${n}: [String!]" for n in names)
        + ") { "
        + " ".join(
            f"a{n}: ImagingStudyList(instance: ${name}) {{ id }}" for n, name in enumerate(names)
        )
        + " }"
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        body = (
            await http.post(
                "/graphql", json={"query": query, "variables": {n: ["1"] * 49_999 for n in names}}
            )
        ).json()
    assert body["errors"][0]["extensions"]["code"] == "QUERY_REJECTED"
    assert body["errors"][0]["extensions"]["limit"] == 1_000


# --- parsing and validating a new document: off the loop, bounded, cached only when valid ---

REPEATED = "{ ImagingStudyList { " + "id " * 4000 + "} }"  # 12 KB: quadratic to check


async def test_a_document_of_repeated_fields_is_refused_with_a_reason(gql: Gql) -> None:
    body = await gql(REPEATED)
    rejected(body, "field comparisons")
    assert "select each field once" in body["errors"][0]["message"]


def _documents(app: Any) -> DocumentCache:
    """The app's cache of parsed documents."""
    from api.graphql.documents import QueryLimitsFactory

    [view] = [
        r.endpoint
        for r in app.routes
        if getattr(r, "path", "") == "/graphql" and hasattr(r.endpoint, "schema")
    ][:1]
    [factory] = [e for e in view.schema.extensions if isinstance(e, QueryLimitsFactory)]
    return factory.documents


async def test_only_documents_that_validated_are_cached(app: Any, gql: Gql) -> None:
    documents = _documents(app)
    before = set(documents)
    for n in range(3):  # made-up texts, as a flood varies a comment
        await gql(f"# {n}\n{{ ImagingStudyList {{ nosuchfield }} }}")
        await gql(f"# {n}\n" + REPEATED)
    assert set(documents) == before
    await gql("# kept\n{ ImagingStudyList(_count: 1) { id } }")
    assert "# kept\n{ ImagingStudyList(_count: 1) { id } }" in documents


async def test_a_new_heavy_document_leaves_the_event_loop_free(gql: Gql) -> None:
    """Parsing and validating thousands of fields takes a tenth of a second or more: on a
    worker thread, the loop goes on turning (held by it, the loop does not turn once while
    the document is parsed and checked)."""
    async with LoopTicks() as ticks:
        await gql("# heavy\n{ " + "__typename " * 8000 + "}")
    assert ticks.count > 100


def test_a_series_fhirpath_that_walks_instances_is_priced_at_them() -> None:
    """X4: series(fhirpath: "instance....") ran over every instance of the study, on the event
    loop, priced as if it read the series alone."""

    def cost(expression: str, variables: dict[str, Any] | None = None) -> int:
        text = (
            'query($e: String) { ImagingStudy(id: "x") { series(fhirpath: $e) { uid } } }'
            if variables is not None
            else f'{{ ImagingStudy(id: "x") {{ series(fhirpath: "{expression}") {{ uid }} }} }}'
        )
        [refused] = limit_errors(Limits(max_cost=1), parse(text), variables or {})
        return int((refused.extensions or {})["measured"])

    alone = cost("modality.exists()")
    walking = cost("instance.exists()")
    assert walking - alone == 10 * Limits().max_instances
    assert cost("", {"e": "instance.exists()"}) == walking  # from its variable too
    assert cost("", {}) == walking  # not known: priced as the worst
