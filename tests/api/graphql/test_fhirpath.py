"""The one FHIRPath helper (api/graphql/fhirpath.py) behind `fhirpath` on the searches and on every
repeating element: primitives that carry extensions (`_name` siblings) compare as FHIRPath says,
the extensions stay readable, and a failure on an item is BAD_USER_INPUT that quotes no stored
value."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from graphql import GraphQLError

from api.graphql import budget, fhirpath, fhirpath_rules, fhirpath_time
from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.extensions import EXT, NOTE
from tests.support.graphql import Gql, error, expressions
from tests.support.server import serving
from tests.support.websocket import init, receive, socket, subscribe


def extended() -> dict[str, Any]:
    """A study whose status, started, series description and instance number carry
    extensions or ids."""
    study = demo.study("ext", 2, 2)
    study["started"] = "2024-03-01T10:00:00Z"
    study["_status"] = {"extension": EXT}
    study["_started"] = {"id": "s-1"}
    series = study["series"][0]
    series["description"] = "Head"
    series["_description"] = {"extension": EXT}
    series["instance"][1]["_number"] = {"id": "n-2"}
    return study


@pytest.fixture
def settings() -> Settings:
    # Studies of at most 1,000 instances: a `fhirpath` on instances fits the cost limit.
    return Settings(seed=False, allowed_hosts=("test",), max_instances=1_000)


@pytest.fixture
async def stored(store: Repository) -> Repository:
    await store.create(extended())
    await store.create(demo.study("plain", 1, 1))
    return store


LIST = 'query($e: String) { ImagingStudyList(fhirpath: $e, _sort: "_id") { id } }'


@pytest.mark.parametrize(
    ("expression", "kept"),
    [
        # fhirpathpy alone reads `status` as two items here (the value and `_status`): false.
        ("status = 'available'", ["ext", "plain"]),
        ("started = @2024-03-01T10:00:00Z", ["ext"]),
        ("series.where(description = 'Head').exists()", ["ext"]),
        ("series.instance.where(number = 2).count() = 2", ["ext"]),
        # An expression that reads extensions or ids still sees them.
        (f"status.extension('{NOTE}').exists()", ["ext"]),
        ("started.id = 's-1'", ["ext"]),
        # ... as fhirpathpy does: the value, then the sibling, so first() is the value.
        ("status.extension.exists() and status.first() = 'available'", ["ext"]),
        ("series.description.extension.value = 'as told by the patient'", ["ext"]),
    ],
)
async def test_primitives_with_extensions_compare_by_their_value(
    stored: Repository, gql: Gql, expression: str, kept: list[str]
) -> None:
    body = await gql(LIST, e=expression)
    assert body == {"data": {"ImagingStudyList": [{"id": i} for i in kept]}}


async def test_item_fhirpath_sees_values_and_extensions_alike(stored: Repository, gql: Gql) -> None:
    body = await gql(
        '{ ImagingStudy(id: "ext") { '
        "a: series(fhirpath: \"description = 'Head'\") { number } "
        'b: series(fhirpath: "description.extension.exists()") { number } '
        'c: series(_count: 1) { instance(fhirpath: "number = 2") { uid } } } }'
    )
    assert "errors" not in body, body
    study = body["data"]["ImagingStudy"]
    assert study["a"] == [{"number": 1}]
    assert study["b"] == [{"number": 1}]
    assert study["c"] == [{"instance": [{"uid": extended()["series"][0]["instance"][1]["uid"]}]}]


@pytest.mark.parametrize(
    "expression",
    [
        "instance.uid.single()",  # an error item, not an exception: it used to keep the series
        "instance.uid.first() + 1",  # an exception whose message quotes the uid
    ],
)
async def test_a_failure_on_an_item_is_bad_user_input_quoting_no_value(
    stored: Repository, gql: Gql, expression: str
) -> None:
    body = await gql(
        'query($e: String) { ImagingStudy(id: "ext") { series(fhirpath: $e) { number } } }',
        e=expression,
    )
    found = error(body)
    assert found["extensions"]["code"] == "BAD_USER_INPUT"
    assert expressions(body) == ["ImagingStudy.series(fhirpath)"]
    assert "fails on an item" in found["message"]
    assert extended()["series"][0]["instance"][0]["uid"] not in json.dumps(body)


async def test_a_count_of_zero_is_a_result_not_false(stored: Repository, gql: Gql) -> None:
    # "Not a single boolean: kept when not empty"; 0 == False in Python dropped it.
    body = await gql(LIST, e="series.where(false).count()")
    assert body["data"]["ImagingStudyList"] == [{"id": "ext"}, {"id": "plain"}]


def test_the_view_drops_siblings_and_copies_only_what_had_them() -> None:
    study = extended()
    view = fhirpath.without_siblings(study)
    assert "_status" not in view
    assert "_description" not in view["series"][0]
    assert view["series"][1] is study["series"][1]  # nothing to drop: not copied
    plain = demo.study("plain", 1, 1)
    assert fhirpath.without_siblings(plain) is plain


def test_the_projection_of_an_item_fhirpath_reads_the_siblings_it_needs() -> None:
    elements = ("description", "number", "extension")
    assert fhirpath.names_read("description = 'x'", elements) == {"description"}
    assert fhirpath.names_read("description.extension.exists()", elements) == {
        "description",
        "_description",
        "extension",
        "_extension",
    }


# The attacks of a black-box tester: each held the server for seconds to minutes, or grew it to
# gigabytes, or wrote a study to the log. Each is refused before it runs, naming the reason.
UNBOUNDED = [
    ("'a'.repeat($this & 'a').count() > 0", "repeat() is not served"),
    ("(1|2|3).aggregate($total & $total, 'ab').length() > 0", "aggregate() is not served"),
    ("'aaaaaaaaaaaaaaaaaaaaaaaaaaa!'.matches('^(a+)+$')", "matches() is not served"),
    ("'a'.replaceMatches('(a+)+$', 'b') = 'b'", "replaceMatches() is not served"),
    ("trace('LEAK', description).exists()", "trace() is not served"),
    ("descendants().count() > 0", "descendants() is not served"),
    ("'a'.replace('a', 'aa').replace('a', 'aa') = 'aaaa'", "replace() is not served"),
    ("%context.series.exists()", "environment variables"),
    (
        "series.select($this).select($this).select($this).select($this).select($this).exists()",
        "at most 4 where()",
    ),
    # Quadratic in fhirpathpy: 8.6 s on one series of 10,000 instances, on the event loop.
    ("series.instance.intersect(series.instance).exists()", "intersect() is not served"),
    ("series.instance.exclude(series.instance).empty()", "exclude() is not served"),
    ("series.instance.uid.subsetOf(series.instance.uid)", "subsetOf() is not served"),
    ("series.instance.uid.supersetOf(series.instance.uid)", "supersetOf() is not served"),
]


@pytest.mark.parametrize(("expression", "reason"), UNBOUNDED)
async def test_an_expression_that_could_run_without_bound_is_refused(
    stored: Repository, gql: Gql, caplog: pytest.LogCaptureFixture, expression: str, reason: str
) -> None:
    for query in (
        LIST,
        'query($e: String) { ImagingStudy(id: "ext") { series(fhirpath: $e) { number } } }',
    ):
        body = await gql(query, e=expression)
        found = error(body)
        assert found["extensions"]["code"] == "BAD_USER_INPUT"
        assert reason in found["message"]
    assert "LEAK" not in caplog.text


async def test_an_unbounded_slice_path_is_refused(stored: Repository, gql: Gql) -> None:
    body = await gql(
        '{ ImagingStudy(id: "ext") { series @flatten { instance @flatten '
        '@slice(path: "(1|2).aggregate($total & $total, uid)") { uid } } } }'
    )
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_fhirpath_time_is_one_allowance_per_operation(
    stored: Repository, gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every FHIRPath of an operation (searches, repeating elements, @slice) draws on one
    allowance of seconds, checked after each item: an expression whose cost follows the data
    still meets a 50,000-instance study."""
    monkeypatch.setattr(fhirpath_time, "MAX_SECONDS", 0.0)
    for query in (
        '{ ImagingStudy(id: "ext") { series(fhirpath: "number > 0") { number } } }',
        '{ ImagingStudyList(fhirpath: "series.exists()") { id } }',
        '{ ImagingStudy(id: "ext") { series @slice(path: "number") { number } } }',
    ):
        body = await gql(query)
        assert body["errors"][0]["extensions"]["code"] == "QUERY_REJECTED", body
        assert "seconds of FHIRPath evaluation" in body["errors"][0]["message"]


async def test_a_refused_slice_path_names_the_function(
    stored: Repository, gql: Gql, capsys: pytest.CaptureFixture[str]
) -> None:
    body = await gql(
        '{ ImagingStudy(id: "ext") { series @slice(path: "uid.matches(\'a\')") { number } } }'
    )
    assert "matches() is not served" in error(body)["message"]
    await gql('{ ImagingStudyList(fhirpath: "`x") { id } }')  # a lexer error
    assert "recognition error" not in capsys.readouterr().out  # nothing outside the log


async def test_evaluation_on_the_event_loop_has_an_allowance_of_its_own(
    stored: Repository, gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeating element's fhirpath runs in its resolver, on the event loop, where every
    other request waits: it gets a smaller allowance than the searches' (off the loop)."""
    monkeypatch.setattr(fhirpath_time, "LOOP_SECONDS", 0.0)
    body = await gql('{ ImagingStudy(id: "ext") { series(fhirpath: "number > 0") { number } } }')
    assert body["errors"][0]["extensions"]["code"] == "QUERY_REJECTED"
    assert "use a field filter" in body["errors"][0]["message"]
    searched = await gql('{ ImagingStudyList(fhirpath: "series.exists()") { id } }')
    assert "errors" not in searched  # off the loop: the larger allowance


async def test_expressions_are_parsed_off_the_event_loop(
    stored: Repository, gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing costs with the text: a few kilobytes of brackets from many callers would hold
    every other request if it ran on the event loop. Every expression an operation holds (a
    search's, a repeating element's, @slice's; literal or variable; one that does not parse
    too) is parsed on a worker thread before the operation runs, and found compiled after."""
    loop_thread = threading.get_ident()
    parsed: list[tuple[str, bool]] = []
    real = fhirpath_rules.fhirpath_parser.parse

    def spy(expression: str) -> Any:
        parsed.append((expression, threading.get_ident() == loop_thread))
        return real(expression)

    monkeypatch.setattr(fhirpath_rules.fhirpath_parser, "parse", spy)
    marker = f"{uuid.uuid4().int % 10**9}"  # texts not yet in the compiled cache
    search = f"status = 'available' or {marker} = 1"
    element = f"number > {marker}"
    sliced = f"number + {marker}"
    broken = f"status[0]{'[0]' * 300} = ({marker}"
    body = await gql(
        'query($e: String, $x: String) { ImagingStudyList(fhirpath: $e, _sort: "_id") { id } '
        'ImagingStudy(id: "ext") { series(fhirpath: $x) { number } '
        f'other: series @slice(path: "{sliced}") {{ number }} }} }}',
        e=search,
        x=element,
    )
    assert "errors" not in body, body
    body = await gql(LIST, e=broken)
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    texts = {text for text, _ in parsed}
    assert {search, element, sliced, broken} <= texts
    assert [text for text, on_loop in parsed if on_loop] == []


async def test_an_item_expression_longer_than_the_cap_is_refused_unparsed(
    stored: Repository, gql: Gql
) -> None:
    long = "number = 1" + " or number = 1" * (fhirpath.MAX_LENGTH // 14 + 1)
    body = await gql(
        'query($x: String) { ImagingStudy(id: "ext") { series(fhirpath: $x) { number } } }',
        x=long,
    )
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert f"at most {fhirpath.MAX_LENGTH} characters" in error(body)["message"]


@pytest.mark.parametrize(
    "query",
    [
        'query($x: String) { ImagingStudy(id: "ext") { identifier(fhirpath: $x) { value } } }',
        'query($x: String) { ImagingStudyList(fhirpath: $x, _sort: "_id") { id } }',
    ],
)
async def test_many_unions_are_refused_before_they_run(
    stored: Repository, gql: Gql, query: str
) -> None:
    """A union of many literal items under select() costs their number to a power (found
    black-box: 200 items selected over themselves held the event loop 17 s); more than
    MOST_UNIONS unions are refused, unevaluated, naming the rule."""
    items = "(" + "|".join(str(n) for n in range(fhirpath_rules.MOST_UNIONS + 2)) + ")"
    body = await gql(query, x=f"{items}.select({items}).count() > 0")
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert f"at most {fhirpath_rules.MOST_UNIONS} unions" in error(body)["message"]
    few = "(" + "|".join(str(n) for n in range(fhirpath_rules.MOST_UNIONS // 2)) + ")"
    assert "errors" not in await gql(query, x=f"{few}.select({few}).count() > 0")


async def test_an_evaluation_stops_at_its_deadline_not_after_its_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One item may cost a lot (a chain of `&` over 200 instances took 2.8 s on the event
    loop, charged only once it ended): the evaluation itself stops when the operation's
    allowance is spent. A clock that moves 0.1 s per reading makes any evaluation of more
    than a few nodes pass the loop's 0.5 s."""
    clock = iter(n / 10 for n in range(1_000_000))
    monkeypatch.setattr(fhirpath_time.time, "monotonic", lambda: next(clock))
    expression = "instance.select(" + " & ".join(["uid"] * 40) + ").exists()"
    item = {"instance": [{"uid": f"1.2.{n}"} for n in range(50)]}
    token = budget.current.set(budget.Budget(10**9))
    try:
        with pytest.raises(GraphQLError) as refused:
            fhirpath.evaluate(expression, item, "series(fhirpath)")
    finally:
        budget.current.reset(token)
    assert refused.value.extensions["code"] == "QUERY_REJECTED"
    assert next(clock) < 5  # stopped within a few nodes, not after all 2,000 of them


async def test_a_subscription_with_fhirpath_is_refused(store: Repository) -> None:
    """Each event would evaluate it on the event loop once per subscriber, with no operation
    to bound it: refused when subscribing, naming the rule."""
    async with (
        serving(create_app(Settings(seed=False), store)) as address,
        socket(address) as ws,
    ):
        assert (await init(ws))["type"] == "connection_ack"
        for n, selection in enumerate(
            (
                'resource { series(fhirpath: "uid.exists()") { uid } }',
                'resource { series @slice(path: "uid") { uid } }',
            )
        ):
            await subscribe(
                ws, f"s{n}", f"subscription {{ ImagingStudyChanged {{ id {selection} }} }}"
            )
            message = await receive(ws)  # an error event (as other refusals of a subscription)
            while message["type"] == "complete":  # the one before it ended
                message = await receive(ws)
            assert message["payload"]["data"] is None, message
            [problem] = message["payload"]["errors"]
            assert problem["extensions"]["code"] == "BAD_USER_INPUT"
            assert "not evaluated in subscriptions" in problem["message"]


async def test_the_event_loop_share_is_shared_by_all_operations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each operation's own 0.5 s did not bound them together (found black-box: twenty at
    once held the loop 10 s): once the second's shared allowance is used, an evaluation on
    the event loop is refused at once, whatever its own operation has left."""
    monkeypatch.setattr(fhirpath_time, "_shared", [fhirpath_time.time.monotonic(), 0.0])
    fhirpath_time._shared[1] = fhirpath_time.SHARED_LOOP_SECONDS  # spent by other operations
    token = budget.current.set(budget.Budget(10**9))
    try:
        with pytest.raises(GraphQLError) as refused:
            fhirpath.evaluate("uid.exists()", {"uid": "1.2"}, "series(fhirpath)")
    finally:
        budget.current.reset(token)
    assert refused.value.extensions["code"] == "QUERY_REJECTED"
    assert "by all requests together" in refused.value.message


def test_where_a_document_holds_expressions_is_found_once_per_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before each operation the expressions it holds are compiled ahead: the document is
    walked for them once (the document cache hands out the same nodes), each request's
    variables then give their own values, and another document never finds what was found
    in one that had its id before."""
    from graphql import parse

    from api.graphql import fhirpath_ahead

    walks: list[int] = []
    original = fhirpath_ahead._arguments

    def arguments(document: Any) -> Any:
        walks.append(id(document))
        return original(document)

    monkeypatch.setattr(fhirpath_ahead, "_arguments", arguments)
    monkeypatch.setattr(fhirpath_ahead, "_FOUND", type(fhirpath_ahead._FOUND)())
    document = parse(
        'query($f: String) { ImagingStudy(id: "x") { series(fhirpath: $f) { uid } '
        'instance: series(fhirpath: "number = 1") { uid } } }'
    )
    assert sorted(fhirpath_ahead.expressions(document, {"f": "uid.exists()"})) == [
        "number = 1",
        "uid.exists()",
    ]
    assert list(fhirpath_ahead.expressions(document, {"f": 3})) == ["number = 1"]
    assert sorted(fhirpath_ahead.expressions(document, {"f": "a"})) == ["a", "number = 1"]
    assert len(walks) == 1
    other = parse('{ ImagingStudy(id: "x") { series(fhirpath: "exists()") { uid } } }')
    # As if `document` were freed and `other` allocated where it was:
    fhirpath_ahead._FOUND[id(other)] = fhirpath_ahead._FOUND.pop(id(document))
    assert list(fhirpath_ahead.expressions(other, {})) == ["exists()"]
