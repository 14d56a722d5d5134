"""The `_filter` grammar (store/fhir/filter.py) and its compilation (store/mongo/search.py): the
trees it builds, every refusal with its position and rule, and that a comparison compiles to exactly
the store filter of the plain argument."""

from __future__ import annotations

import copy
import json

import pytest

from store.fhir import filter as fhir_filter
from store.fhir.filter import Comparison, Logic, Not
from store.fhir.outcome import BAD_USER_INPUT, StoreError
from store.mongo.repository import Repository
from store.mongo.search import ValueCaps, check_values, parse_query, to_filter
from tests.support.search_data import STUDIES, TABLE


def test_comparisons_and_values() -> None:
    assert fhir_filter.parse("status eq available") == Comparison("status", "eq", "available", 0)
    # A JSON string may hold spaces, ')' and escapes; a token runs to a space, ')' or ']'.
    node = fhir_filter.parse('(identifier eq "urn:x|a b)\\"c")')
    assert node == Comparison("identifier", "eq", 'urn:x|a b)"c', 1)
    assert fhir_filter.parse("modality eq a,b") == Comparison("modality", "eq", "a,b", 0)


def test_and_or_go_left_to_right_without_precedence() -> None:
    a, b, c = (
        Comparison(n, "eq", "x", at) for n, at in (("_id", 0), ("status", 12), ("series", 28))
    )
    node = fhir_filter.parse("_id eq x or status eq x and series eq x")
    assert node == Logic("and", (Logic("or", (a, b), 9), c), 24)
    # Runs of one operator stay flat: one level, however long.
    flat = fhir_filter.parse(" or ".join(["_id eq x"] * 50))
    assert isinstance(flat, Logic)
    assert len(flat.parts) == 50


def test_not_and_parentheses() -> None:
    node = fhir_filter.parse("not (status eq a) and (not(_id eq b))")
    assert node == Logic(
        "and",
        (Not(Comparison("status", "eq", "a", 5), 0), Not(Comparison("_id", "eq", "b", 27), 23)),
        18,
    )


@pytest.mark.parametrize(
    ("text", "position", "rule"),
    [
        ("", 1, "the expression is empty"),
        ("status", 7, "expected a space after the parameter name 'status'"),
        ("status eq", 10, "expected a space and a value after 'status eq'"),
        ("status EQ a", 8, "unknown operator 'EQ' (operators are lowercase)"),
        ("status xx a", 8, "unknown operator 'xx'"),
        ("status eq a AND _id eq b", 13, "expected 'and', 'or', ')' or the end, not 'AND'"),
        ("status eq a b", 13, "expected 'and', 'or', ')' or the end, not 'b'"),
        ("(status eq a", 13, "the '(' at character 1 is never closed"),
        ("status eq a)", 12, "this ')' has no matching '('"),
        ("not status eq a", 5, "'not' takes a filter in parentheses"),
        ("subject.name eq x", 8, "chained parameters and [filter] paths are not supported"),
        ("related[type eq x].target re y", 8, "chained parameters"),
        ("patient:identifier eq M1", 8, "the :identifier searches are search arguments"),
        ("status:missing eq true", 7, "'status:missing': _filter takes no search modifiers"),
        ('status eq "open', 11, "a quoted value must be a JSON string"),
        ("status eq )", 11, "expected a value"),
        ("9x eq a", 1, "expected a search parameter name"),
        ("status eq a or", 15, "expected a search parameter name, '(' or 'not (', not 'the end'"),
    ],
)
def test_grammar_errors_give_position_and_rule(text: str, position: int, rule: str) -> None:
    with pytest.raises(fhir_filter.FilterError) as caught:
        fhir_filter.parse(text)
    assert caught.value.position == position
    assert rule in caught.value.rule


def test_depth_is_bounded() -> None:
    deep = "(" * 9 + "_id eq a" + ")" * 9
    with pytest.raises(fhir_filter.FilterError, match="nests deeper than 8 levels"):
        fhir_filter.parse(deep)
    assert fhir_filter.parse("(" * 7 + "_id eq a" + ")" * 7) == Comparison("_id", "eq", "a", 7)
    # Alternating and/or nests one level per change: bounded too.
    alternating = " and ".join(f"(_id eq a or _id eq {n})" for n in range(3))
    fhir_filter.parse(alternating)
    with pytest.raises(fhir_filter.FilterError, match="each change between 'and' and 'or'"):
        fhir_filter.parse(" and _id eq x or ".join(["_id eq a"] * 10))


def test_terms_and_values_are_bounded_by_the_search_caps() -> None:
    caps = ValueCaps(per_argument=3, total=4, length=20)
    check_values([("_filter", ["_id eq a or _id eq b or _id eq c"])], caps)
    with pytest.raises(StoreError, match="at most 3 comparisons") as caught:
        check_values([("_filter", ["_id eq a or _id eq b or _id eq c or _id eq d"])], caps)
    assert caught.value.issues[0].expression == "_filter"
    with pytest.raises(StoreError, match="at character 8: a value may be at most 20"):
        check_values([("_filter", ["_id eq " + "x" * 21])], caps)
    with pytest.raises(StoreError, match="the expression may be at most 63 characters"):
        check_values([("_filter", ["_id eq a" + " " * 60])], caps)
    # Comparisons count with the other arguments' values towards the total.
    with pytest.raises(StoreError, match="at most 4 values over all"):
        check_values([("_id", ["a,b"]), ("_filter", ["_id eq a or _id eq b or _id eq c"])], caps)


def _error(text: str) -> str:
    with pytest.raises(StoreError) as caught:
        to_filter([("_filter", text)])
    assert caught.value.code == BAD_USER_INPUT
    [issue] = caught.value.issues
    assert issue.expression == "_filter"
    return issue.diagnostics


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "modality co CT",
            "at character 1: 'modality co': applies to string, number and date "
            "parameters; a token parameter takes eq ne pr",
        ),
        ("modality in http://vs", "needs a terminology server (value set expansion)"),
        ("modality ss 1", "needs a terminology server (subsumption)"),
        ("status sw av", "applies to string parameters; ImagingStudy has none"),
        (
            "_id eq a and started re x",
            "at character 14: 'started re': 're' does not apply to date parameters",
        ),
        ("subject gt Patient/1", "'gt' does not apply to reference parameters"),
        ("body_site eq x", "unknown search parameter 'body_site'; supported: _id"),
        ("started ge ge2024", "the operator is the prefix: write the date alone"),
        ("started eq 2024-13", "'2024-13' is not a calendar date or time"),
        ("modality pr maybe", "the value of 'pr' is true or false"),
        ("patient eq Group/1", "searches Patient references, not Group"),
    ],
)
def test_operators_refused_by_parameter_type(text: str, message: str) -> None:
    assert message in _error(text)


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("modality eq CT", "modality", "CT"),
        ('identifier eq "urn:acc|A 1"', "identifier", "urn:acc|A 1"),
        ("patient eq p1", "patient", "p1"),
        ("reason re Condition/1", "reason", "Condition/1"),
        ("subject re Patient/1", "subject", "Patient/1"),
        ("started ge 2024-01", "started", "ge2024-01"),
        ("started eq 2024", "started", "eq2024"),
        ("_lastUpdated lt 2024-05-01T10:00:00Z", "_lastUpdated", "lt2024-05-01T10:00:00Z"),
        ("_id eq a", "_id", "a"),
        ("status eq available", "status", "available"),
    ],
)
def test_a_comparison_is_the_plain_arguments_filter(text: str, name: str, value: str) -> None:
    assert to_filter([("_filter", text)]) == to_filter([(name, value)])


def test_logic_compiles_to_mongodb_logic_over_the_same_filters() -> None:
    ct, mr = (to_filter([("modality", m)])["$and"][1] for m in ("CT", "MR"))
    assert to_filter([("_filter", "not (modality eq CT or modality eq MR)")])["$and"][1] == {
        "$nor": [{"$or": [ct, mr]}]
    }
    assert to_filter([("_filter", "modality ne CT")])["$and"][1] == {"$nor": [ct]}
    # _filter is one more AND clause: whatever it says, the others (a patient) still hold.
    combined = to_filter([("_filter", "modality eq CT or modality eq MR"), ("patient", "p1")])
    assert combined["$and"][2] == to_filter([("patient", "p1")])["$and"][1]


@pytest.fixture
async def loaded(store: Repository) -> Repository:
    for study in STUDIES:
        await store.create(copy.deepcopy(study))
    return store


async def _ids(repo: Repository, text: str) -> list[str]:
    return sorted(s["id"] for s in await repo.search([("_filter", text)], 100))


def _comparison(name: str, value: str) -> str:
    """The table's plain value as a `_filter` comparison (a date's prefix is the operator)."""
    op, value = (
        (value[:2], value[2:]) if name == "started" and value[:2].isalpha() else ("eq", value)
    )
    return f"{name} {op} {json.dumps(value)}"


@pytest.mark.parametrize(("name", "a", "b", "none", "bad"), TABLE, ids=[r[0] for r in TABLE])
async def test_every_parameter_through_filter(
    loaded: Repository, name: str, a: str, b: str, none: str, bad: str
) -> None:
    is_a, is_b = _comparison(name, a), _comparison(name, b)
    assert await _ids(loaded, is_a) == ["a"]
    assert await _ids(loaded, f"{is_a} or {is_b}") == ["a", "b"]
    assert await _ids(loaded, f"{is_a} and {is_b}") == []
    assert await _ids(loaded, f"not ({is_a})") == ["b", "c"]
    assert await _ids(loaded, f"{is_b} and not ({is_a} or {_comparison(name, none)})") == ["b"]
    if name != "started":  # a date's ne is FHIR's prefix (outside the range), not "not eq"
        assert await _ids(loaded, is_a.replace(" eq ", " ne ", 1)) == ["b", "c"]
    everyone = name in ("_id", "_lastUpdated", "status", "subject")
    assert await _ids(loaded, f"{name} pr true") == (["a", "b", "c"] if everyone else ["a", "b"])
    assert await _ids(loaded, f"{name} pr false") == ([] if everyone else ["c"])
    with pytest.raises(StoreError) as caught:
        await _ids(loaded, _comparison(name, bad))
    assert caught.value.code == BAD_USER_INPUT
    assert caught.value.issues[0].expression == "_filter"


async def test_date_contains_and_overlaps(loaded: Repository) -> None:
    # A: 2024-03-05T10:00+01:00 (a minute); B: 2023 (a year).
    assert await _ids(loaded, "started co 2023-06-01") == ["b"]  # the year holds the day
    assert await _ids(loaded, "started eq 2023-06-01") == []  # the day does not hold the year
    assert await _ids(loaded, "started po 2023-12-31T23:00:00Z") == ["b"]
    assert await _ids(loaded, "started po 2024-03") == ["a"]
    assert await _ids(loaded, "started po 2022 or started co 2024-03-05T09:00:00Z") == ["a"]


def test_a_filter_in_a_search_string_is_named_by_that_argument() -> None:
    params = parse_query("_filter=status eq", "ifNoneExist")
    with pytest.raises(StoreError) as caught:
        to_filter(params, "ifNoneExist")
    [issue] = caught.value.issues
    assert issue.expression == "ifNoneExist"
    assert issue.diagnostics == (
        "_filter: at character 10: expected a space and a value after 'status eq'"
    )
    assert to_filter(parse_query("_filter=status ne available", "ifNoneExist")) == to_filter(
        [("_filter", "status ne available")]
    )
