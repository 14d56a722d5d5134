"""JSON Patches between versions (store/fhir/patch.py): what history keeps per version."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from store.fhir import patch

KEYS = st.sampled_from(["a", "b", "uid", "a/b", "~x", "instance", ""])
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(0, 2), st.text(max_size=3)
)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=25,
)


def _edited(value: Any, data: st.DataObject) -> Any:
    """`value` changed the way versions change: elements inserted, removed or replaced, keys
    added or dropped, leaves changed, sharing what is unchanged with `value`."""
    if isinstance(value, list):
        items = [_edited(v, data) if data.draw(st.booleans()) else v for v in value]
        at = data.draw(st.integers(0, len(items)))
        if data.draw(st.booleans()):
            items[at:at] = data.draw(st.lists(JSON, max_size=3))
        elif items:
            del items[at : at + data.draw(st.integers(0, 2))]
        return items
    if isinstance(value, dict):
        out = {k: _edited(v, data) if data.draw(st.booleans()) else v for k, v in value.items()}
        for key in data.draw(st.lists(KEYS, max_size=2)):
            if data.draw(st.booleans()):
                out[key] = data.draw(JSON)
            else:
                out.pop(key, None)
        return out
    return data.draw(JSON) if data.draw(st.booleans()) else value


def _exactly(a: Any, b: Any) -> bool:
    """The same JSON (members in any order: JSON objects are unordered, RFC 8259)."""
    sort = orjson.OPT_SORT_KEYS
    return patch.equal(a, b) and orjson.dumps(a, option=sort) == orjson.dumps(b, option=sort)


@settings(max_examples=300, deadline=None)
@given(old=JSON, data=st.data())
def test_a_patch_rebuilds_the_old_version_exactly_and_changes_neither(
    old: Any, data: st.DataObject
) -> None:
    new = _edited(old, data)
    old_copy, new_copy = copy.deepcopy(old), copy.deepcopy(new)
    back = patch.diff(new, old)
    assert _exactly(patch.apply(new, back), old)
    assert _exactly(new, new_copy)
    assert _exactly(old, old_copy)
    # Stored patches come back from the store as fresh objects: they apply the same.
    assert _exactly(patch.apply(new_copy, copy.deepcopy(back)), old)


def test_an_append_is_patched_by_what_was_appended() -> None:
    instances = [{"uid": f"1.2.{n}", "number": n} for n in range(5000)]
    old = {"series": [{"uid": "s", "instance": instances}], "numberOfInstances": 5000}
    new = {
        **old,
        "series": [{"uid": "s", "instance": [*instances, {"uid": "1.2.x", "number": 5000}]}],
        "numberOfInstances": 5001,
    }
    back = patch.diff(new, old)
    assert back == [
        {"op": "remove", "path": "/series/0/instance/5000"},
        {"op": "replace", "path": "/numberOfInstances", "value": 5000},
    ]
    rebuilt = patch.apply(new, back)
    assert rebuilt == old
    # Only the containers on the changed paths are new; the instances are shared.
    assert rebuilt["series"][0]["instance"][0] is new["series"][0]["instance"][0]


def test_an_insert_in_the_middle_is_one_operation() -> None:
    old = [{"n": n} for n in range(100)]
    new = [*old[:40], {"n": 39.5}, *old[40:]]
    assert patch.diff(new, old) == [{"op": "remove", "path": "/40"}]
    assert patch.diff(old, new) == [{"op": "add", "path": "/40", "value": {"n": 39.5}}]


def test_json_types_are_told_apart_and_paths_escaped() -> None:
    # Python's == says 1 == 1.0 == True; JSON does not, and neither may history.
    for old, new in ((1, 1.0), (1, True), (0, False)):
        assert patch.diff({"v": new}, {"v": old}) == [{"op": "replace", "path": "/v", "value": old}]
    assert patch.diff({}, {"a/b": 1, "~c": 2}) == [
        {"op": "add", "path": "/a~1b", "value": 1},
        {"op": "add", "path": "/~0c", "value": 2},
    ]
    assert patch.apply({}, patch.diff({}, {"a/b": 1, "~c": 2})) == {"a/b": 1, "~c": 2}


def test_a_whole_document_replacement_applies() -> None:
    assert patch.apply({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == {"b": 2}
