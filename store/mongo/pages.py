"""A page of every series' instances, read as a page: the aggregation that makes MongoDB send
`instance[offset:offset + count]` of each series instead of every instance of the study. Pure:
the pipeline is data, run by `Reads.get` on a real server.

Documented operators only ($match, $limit, $project, $map, $slice, $cond, $isArray,
$mergeObjects, $$REMOVE; MongoDB 3.6+). The embedded store runs no pipeline for this: it pages
the study in Python from the version-checked cache (store/mongo/cache.py), which costs what
the page holds without a copy of the study."""

from __future__ import annotations

from typing import Any

from store.fhir import Study

# $slice's count must be positive: "to the end" is a count no study reaches.
_ALL = 2**31 - 1


def page_of(study: Study, offset: int, count: int | None) -> Study:
    """The study with each series' instances cut to the page (new dicts: the kept study is
    shared and never changed)."""
    end = None if count is None else offset + count
    series = study.get("series")
    if type(series) is not list:
        return study
    return {
        **study,
        "series": [
            {**s, "instance": s["instance"][offset:end]}
            if type(s) is dict and type(s.get("instance")) is list
            else s
            for s in series
        ],
    }


def _object(variable: str, names: set[str]) -> dict[str, str]:
    """An object expression of the named fields of `$$variable` (a missing one is left out)."""
    return {name: f"$${variable}.{name}" for name in sorted(names)}


def pipeline(
    query: dict[str, Any], fields: dict[str, int] | None, offset: int, count: int | None
) -> list[dict[str, Any]]:
    """The aggregation reading the study `query` matches with the projected `fields` (a
    `reads.projection`, None: all) and, of each series, only the instances of the page."""
    if count is not None and count < 1:
        raise ValueError("a page holds at least one instance")
    length = _ALL if count is None else count
    instances = {"$slice": ["$$s.instance", offset, length]}
    has = {"$isArray": "$$s.instance"}
    if fields is None:
        series_in: Any = {
            "$cond": [has, {"$mergeObjects": ["$$s", {"instance": instances}]}, "$$s"]
        }
        project: dict[str, Any] = {"_srv": 0}
        return [
            {"$match": query},
            {"$limit": 1},
            {"$project": project},
            {"$set": {"series": _over_series(series_in)}},
        ]
    top = {path: 1 for path in fields if path != "series" and not path.startswith("series.")}
    below = {path.split(".", 1)[1] for path in fields if path.startswith("series.")}
    project = {**top, "_id": 0}
    if "series" in fields:
        series_in = {"$cond": [has, {"$mergeObjects": ["$$s", {"instance": instances}]}, "$$s"]}
    elif below:
        # Element names one level down (a datatype is read whole; a dot is no field name).
        own = {p.split(".")[0] for p in below if p.split(".")[0] != "instance"}
        object_in: dict[str, Any] = _object("s", own)
        inner = {p.split(".")[1] for p in below if p.startswith("instance.")}
        if "instance" in below:
            paged: Any = instances
        elif inner:
            paged = {"$map": {"input": instances, "as": "i", "in": _object("i", inner)}}
        else:
            paged = None
        if paged is not None:
            object_in["instance"] = {"$cond": [has, paged, "$$REMOVE"]}
        series_in = object_in
    else:
        return [{"$match": query}, {"$limit": 1}, {"$project": project}]
    project["series"] = _over_series(series_in)
    return [{"$match": query}, {"$limit": 1}, {"$project": project}]


def _over_series(each: Any) -> dict[str, Any]:
    # A study without series keeps none ($$REMOVE), as a plain projection would.
    return {
        "$cond": [
            {"$isArray": "$series"},
            {"$map": {"input": "$series", "as": "s", "in": each}},
            "$$REMOVE",
        ]
    }
