"""Property: search agrees with a brute-force filter written here, independently of the store,
over generated studies and queries (patient, status, modality, started, identifier, series, and
the :identifier searches of patient, subject, based-on, referrer and performer), and `_filter`
trees of the same comparisons (but the :identifier ones, which _filter has not) under
and/or/not."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.mongo import client
from store.mongo.repository import Repository
from store.mongo.search import filter_comparison, split_unescaped, to_filter

DCM = "http://dicom.nema.org/resources/ontology/DCM"
PATIENTS = ["p1", "p2", "p3"]
CODES = ["CT", "MR", "US"]
MRN = "urn:mrn"
IDENTIFIED = ["patient", "subject", "based-on", "referrer", "performer"]

# -- an independent reading of FHIR dates and prefixes -----------------------------------------


def _bounds(value: str) -> tuple[datetime, datetime]:
    """[start, end) of a partial date, by padding and bumping its last given part."""
    if "T" in value:
        day, rest = value.split("T")
        zone = (
            UTC
            if rest.endswith("Z")
            else timezone(
                (1 if rest[-6] == "+" else -1)
                * timedelta(hours=int(rest[-5:-3]), minutes=int(rest[-2:]))
            )
        )
        clock = rest.rstrip("Z")[:-6] if not rest.endswith("Z") else rest[:-1]
        parts = [int(p) for p in clock.split(":")]
        y, m, d = (int(p) for p in day.split("-"))
        start = datetime(
            y, m, d, parts[0], parts[1], parts[2] if len(parts) > 2 else 0, tzinfo=zone
        )
        return start, start + (timedelta(seconds=1) if len(parts) > 2 else timedelta(minutes=1))
    parts = [int(p) for p in value.split("-")]
    if len(parts) == 1:
        return datetime(parts[0], 1, 1, tzinfo=UTC), datetime(parts[0] + 1, 1, 1, tzinfo=UTC)
    if len(parts) == 2:
        y, m = parts
        return datetime(y, m, 1, tzinfo=UTC), datetime(y + m // 12, m % 12 + 1, 1, tzinfo=UTC)
    start = datetime(*parts, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _date_matches(stored: str | None, query: str) -> bool:
    if stored is None:
        return False
    prefix, value = (query[:2], query[2:]) if query[:2].isalpha() else ("eq", query)
    s_lo, s_hi = _bounds(stored)
    q_lo, q_hi = _bounds(value)
    within = q_lo <= s_lo and s_hi <= q_hi
    return {
        "eq": within,
        "ne": not within,
        "gt": s_hi > q_hi,
        "lt": s_lo < q_lo,
        "ge": s_hi > q_hi or within,
        "le": s_lo < q_lo or within,
        "sa": s_lo >= q_hi,
        "eb": s_hi <= q_lo,
    }[prefix]


def _token_matches(codings: list[dict[str, Any]], query: str) -> bool:
    if "|" not in query:
        return any(c["code"] == query for c in codings)
    system, code = query.split("|")
    return any(c["code"] == code and c.get("system", "") == system for c in codings)


def _says_patient(ref: dict[str, Any]) -> bool:
    """The Reference's type, else the type its literal `Type/id` names, is Patient."""
    if "type" in ref:
        return bool(ref["type"] == "Patient")
    return str(ref.get("reference", "")).startswith("Patient/")


def _references(study: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The References a parameter's :identifier looks at."""
    if name == "patient":
        return [study["subject"]] if _says_patient(study["subject"]) else []
    if name == "subject":
        return [study["subject"]]
    if name == "based-on":
        return list(study.get("basedOn", []))
    if name == "referrer":
        return [study["referrer"]] if "referrer" in study else []
    return [p["actor"] for s in study["series"] for p in s.get("performer", [])]


def _identifier_matches(refs: list[dict[str, Any]], query: str) -> bool:
    identifiers = [r["identifier"] for r in refs if "identifier" in r]
    if "|" not in query:
        return any(i.get("value") == query for i in identifiers)
    system, value = query.split("|")
    return any(
        i.get("system", "") == system and (value == "" or i.get("value") == value)
        for i in identifiers
    )


def oracle(study: dict[str, Any], name: str, value: str) -> bool:
    if name.endswith(":identifier"):
        refs = _references(study, name.split(":")[0])
        return any(_identifier_matches(refs, item) for item in value.split(","))
    if name == "patient":
        return study["subject"].get("reference") == f"Patient/{value}"
    if name == "status":
        return study["status"] in value.split(",")
    if name == "modality":
        return _token_matches([s["modality"]["coding"][0] for s in study["series"]], value)
    if name == "started":
        return _date_matches(study.get("started"), value)
    if name == "identifier":
        return any(i["value"] == value.split("|")[-1] for i in study["identifier"])
    if name == "series":
        return any(s["uid"] == value for s in study["series"])
    raise AssertionError(name)


# -- generated data ----------------------------------------------------------------------------

years = st.integers(2022, 2025)
partial_dates = st.one_of(
    years.map(str),
    st.tuples(years, st.integers(1, 12)).map(lambda t: f"{t[0]}-{t[1]:02d}"),
    st.tuples(years, st.integers(1, 12), st.integers(1, 28)).map(
        lambda t: f"{t[0]}-{t[1]:02d}-{t[2]:02d}"
    ),
    st.tuples(
        years,
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.sampled_from(["Z", "+01:00", "-05:00", "+14:00"]),
    ).map(lambda t: f"{t[0]}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:30:00{t[4]}"),
)


def _identifier(draw: st.DrawFn) -> dict[str, str]:
    identifier = {"value": draw(st.sampled_from(["M1", "M2"]))}
    if draw(st.booleans()):
        identifier["system"] = MRN
    return identifier


def _reference(draw: st.DrawFn, types: list[str]) -> dict[str, Any]:
    """A Reference by literal reference, by identifier (with its type, as R5 requires), or
    both."""
    kind = draw(st.sampled_from(types))
    form = draw(st.sampled_from(["literal", "identifier", "both"]))
    ref: dict[str, Any] = {}
    if form != "identifier":
        ref["reference"] = f"{kind}/{draw(st.sampled_from(PATIENTS))}"
    else:
        ref["type"] = kind
    if form != "literal":
        ref["identifier"] = _identifier(draw)
    return ref


@st.composite
def studies(draw: st.DrawFn) -> list[dict[str, Any]]:
    made = []
    for n in range(draw(st.integers(1, 10))):
        series = []
        for s in range(draw(st.integers(1, 3))):
            coding = {"code": draw(st.sampled_from(CODES))}
            if draw(st.booleans()):
                coding["system"] = DCM
            item = {
                "uid": f"1.{n}.{s}",
                "modality": {"coding": [coding]},
                "instance": [{"uid": f"1.{n}.{s}.1", "sopClass": {"code": "x"}}],
            }
            if draw(st.booleans()):
                actor = _reference(draw, ["Practitioner", "Organization"])
                item["performer"] = [{"actor": actor}]
            series.append(item)
        study = {
            "id": f"s{n}",
            "status": draw(st.sampled_from(["registered", "available", "cancelled", "unknown"])),
            "subject": (
                {"reference": f"Patient/{draw(st.sampled_from(PATIENTS))}"}
                if draw(st.booleans())
                else _reference(draw, ["Patient", "Group"])
            ),
            "identifier": [{"system": "urn:acc", "value": f"A{n % 4}"}],
            "series": series,
        }
        based_on = [_reference(draw, ["ServiceRequest"]) for _ in range(draw(st.integers(0, 2)))]
        if based_on:
            study["basedOn"] = based_on
        if draw(st.booleans()):
            study["referrer"] = _reference(draw, ["Practitioner"])
        started = draw(st.none() | partial_dates)
        if started:
            study["started"] = started
        made.append(study)
    return made


IDENTIFIER_QUERIES = st.tuples(
    st.sampled_from(IDENTIFIED).map(lambda name: f"{name}:identifier"),
    st.sampled_from(["M1", "M2", f"{MRN}|M1", "|M2", f"{MRN}|", f"{MRN}|M2,|M1"]),
)


def queries(
    dates: st.SearchStrategy[str], identified: bool = False
) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Lists of (parameter, value); with `identified`, the :identifier searches too (which
    _filter has not)."""
    return st.lists(
        st.one_of(
            *([IDENTIFIER_QUERIES] if identified else []),
            st.tuples(st.just("patient"), st.sampled_from(PATIENTS)),
            st.tuples(
                st.just("status"), st.sampled_from(["available", "registered,cancelled", "unknown"])
            ),
            st.tuples(
                st.just("modality"),
                st.sampled_from(CODES).flatmap(
                    lambda c: st.sampled_from([c, f"{DCM}|{c}", f"|{c}"])
                ),
            ),
            st.tuples(
                st.just("started"),
                st.tuples(
                    st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]), dates
                ).map("".join),
            ),
            st.tuples(st.just("identifier"), st.sampled_from(["A0", "urn:acc|A1", "A3"])),
            st.tuples(st.just("series"), st.sampled_from(["1.0.0", "1.1.1", "1.2.0"])),
        ),
        min_size=1,
        max_size=3,
    )


def _before(value: str) -> str:
    """The period of the same precision just before a partial date (2024-03 -> 2024-02)."""
    if len(value) == 4:
        return str(int(value) - 1)
    if len(value) == 7:
        y, m = int(value[:4]), int(value[5:])
        return f"{y - (m == 1)}-{(m - 2) % 12 + 1:02d}"
    if len(value) == 10:
        return (datetime.fromisoformat(value) - timedelta(days=1)).date().isoformat()
    return value


def _near(data: list[dict[str, Any]]) -> list[str]:
    """The stored dates, their truncations and the periods just before those: query values
    whose range edges touch stored ones, where an off-by-one in a prefix rule shows."""
    found = {d[:n] for s in data if (d := s.get("started")) for n in (4, 7, 10, len(d))}
    return sorted(found | {_before(v) for v in found})


async def _check(data: list[dict[str, Any]], query_sets: list[list[tuple[str, str]]]) -> None:
    handle, db = client.open_embedded("oracle")
    repo = Repository(db)
    try:
        for study in data:
            await repo.create(study)
        for params in query_sets:
            found = {s["id"] for s in await repo.search(params, 1000)}
            expected = {s["id"] for s in data if all(oracle(s, n, v) for n, v in params)}
            assert found == expected, params
    finally:
        client.close(handle)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=studies(), draw=st.data())
def test_search_agrees_with_a_brute_force_filter(
    data: list[dict[str, Any]], draw: st.DataObject
) -> None:
    near = _near(data)
    dates = st.one_of(partial_dates, st.sampled_from(near)) if near else partial_dates
    query_sets = draw.draw(st.lists(queries(dates, identified=True), min_size=1, max_size=8))
    asyncio.run(_check(data, query_sets))


# -- _filter: random and/or/not trees, each compiled by the store and read by the oracle -------

_FILTER_OPS = {"started": ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]}


def filter_trees(dates: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Trees of ("test", name, op, value), ("and"|"or", [parts]) and ("not", part)."""
    comparisons = (
        queries(dates)
        .map(lambda pairs: pairs[0])
        .filter(lambda pair: "," not in pair[1])
        .flatmap(
            lambda pair: (
                st.sampled_from(_FILTER_OPS["started"]).map(
                    lambda op: ("test", "started", op, pair[1].lstrip("abcdefghijklmnopqrstuvwxyz"))
                )
                if pair[0] == "started"
                else st.sampled_from(["eq", "ne"]).map(lambda op: ("test", pair[0], op, pair[1]))
            )
        )
    )
    return st.recursive(
        comparisons,
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)),
            st.tuples(st.just("not"), inner),
        ),
        max_leaves=6,
    )


def render(tree: Any) -> str:
    if tree[0] == "test":
        return f"{tree[1]} {tree[2]} {tree[3]}"
    if tree[0] == "not":
        return f"not ({render(tree[1])})"
    return f" {tree[0]} ".join(f"({render(part)})" for part in tree[1])


def holds(study: dict[str, Any], tree: Any) -> bool:
    if tree[0] == "test":
        _, name, op, value = tree
        if name == "started":
            return oracle(study, name, f"{op}{value}")
        return oracle(study, name, value) != (op == "ne")
    if tree[0] == "not":
        return not holds(study, tree[1])
    found = [holds(study, part) for part in tree[1]]
    return all(found) if tree[0] == "and" else any(found)


async def _check_filters(data: list[dict[str, Any]], trees: list[Any]) -> None:
    handle, db = client.open_embedded("oracle")
    repo = Repository(db)
    try:
        for study in data:
            await repo.create(study)
        for tree in trees:
            text = render(tree)
            found = {s["id"] for s in await repo.search([("_filter", text)], 1000)}
            assert found == {s["id"] for s in data if holds(s, tree)}, text
    finally:
        client.close(handle)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=studies(), draw=st.data())
def test_filter_agrees_with_a_brute_force_filter(
    data: list[dict[str, Any]], draw: st.DataObject
) -> None:
    near = _near(data)
    dates = st.one_of(partial_dates, st.sampled_from(near)) if near else partial_dates
    asyncio.run(
        _check_filters(data, draw.draw(st.lists(filter_trees(dates), min_size=1, max_size=6)))
    )


@settings(max_examples=200, deadline=None)
@given(params=queries(partial_dates))
def test_a_filter_comparison_compiles_to_the_plain_arguments_filter(
    params: list[tuple[str, str]],
) -> None:
    # Each REST value, as a `_filter` expression (OR of its comma values, AND of the pairs),
    # is the very same store filter.
    text = " and ".join(
        "("
        + " or ".join(filter_comparison(name, value) for value in split_unescaped(raw, ","))
        + ")"
        for name, raw in params
    )
    plain = to_filter(params)["$and"][1:]
    [compiled] = to_filter([("_filter", text)])["$and"][1:]
    assert compiled == ({"$and": plain} if len(plain) > 1 else plain[0])
