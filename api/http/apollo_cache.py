"""The Apollo Client cache configuration for this schema: an ES module exporting `possibleTypes`
and `typePolicies` for `new InMemoryCache({ possibleTypes, typePolicies })`, generated from the
schema, served at /apollo-cache.js and printed by `imaging-api apollo-cache`.

Apollo keys every object with an `id` as `Typename:id`. Here only a resource's `id` names a
thing; a FHIR element's `id` (ImagingStudySeries.id, Coding.id, ...) is unique only inside its
resource, and the change event's `id` is the study's. So:

- a resource (a type with `resourceType`, `id` and `meta`) is keyed by its id and, when the
  query selects it, `meta.versionId`: a version's content never changes, and the versions that
  ImagingStudyHistory lists stay apart;
- every other type is unkeyed: kept inside the object that holds it. This includes series and
  instances: their `uid` is shared by every version of a study while their content differs
  from version to version, so keying them by `uid` would show one version's instances under
  another (and a study copied under another id would share them too). Inside their study's
  version they cannot mix;
- a list paged with `_count`/`_offset` whose items have a `uid` and hold no such paged list
  (a series' instances) keeps one list per filter: each page is written at its offset, and a
  page is read back from the cache once all of it is there (or the end of the list is known);
- a list of items with a `uid` that hold paged lists (a study's series) is merged item by item
  on `uid`, so that writing the study again (the next page of instances) keeps the pages
  already fetched. Apollo itself never merges list items (it cannot know which are the same).

The other repeating elements (identifier, coding, extension, ...) take `_count`/`_offset` too,
but their items have no identity to merge pages on: Apollo keeps one list per argument set,
its default, which is right for them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from graphql import (
    GraphQLList,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
)
from starlette.requests import Request
from starlette.responses import Response

PAGE_ARGS = ("_count", "_offset")
RESOURCE_FIELDS = ("resourceType", "id", "meta")

# The part that is the same for every schema: functions cannot travel as JSON. `generated` is
# the JSON this module derives from the schema.
_RUNTIME = """\
// The Apollo Client cache configuration of imaging-api, generated from its schema by
// `imaging-api apollo-cache` (also served at /apollo-cache.js). Use:
//   new InMemoryCache({ possibleTypes, typePolicies })
// README "Using Apollo Client" explains each rule.
const generated = %s;

// A resource version is one cache entry: its content never changes once written.
function resourceKey(object, context) {
  if (object.id == null) return undefined;
  const versionId = object.meta && object.meta.versionId;
  const key = versionId == null ? { id: object.id } : { id: object.id, versionId };
  return `${context.typename}:${JSON.stringify(key)}`;
}

// What a null list is kept as, so it reads back as null rather than as missing.
const NONE = { items: [], end: 0, none: true };

// One list per filter, kept as { items, end }: each page is written at its offset; a short
// page tells where the list ends. (The end is kept in the value: Apollo's `storage` is not the
// same object in merge and in read for an object without a key.)
function mergePage(existing, incoming, { args, readField }) {
  if (incoming == null) return NONE; // no list (a series without instances): null, not a page
  const offset = (args && args._offset) || 0;
  const count = args && args._count;
  const items = [];
  for (let i = 0; i < incoming.length; i += 1) items[offset + i] = incoming[i];
  const end = count == null || incoming.length < count ? offset + incoming.length : null;
  return combinePages(existing, { items, end }, readField);
}

// Pages already cached and a newly written one. When they disagree where they overlap (another
// version's list, once items were added or removed), only the new one is kept.
function combinePages(existing, incoming, readField) {
  if (!existing || existing.none || incoming == null || incoming.none) return incoming;
  const items = existing.items.slice(0);
  for (let i = 0; i < incoming.items.length; i += 1) {
    const [was, now] = [items[i], incoming.items[i]];
    if (was != null && now != null && readField("uid", was) !== readField("uid", now)) {
      return incoming;
    }
    if (now != null) items[i] = now;
  }
  const end = incoming.end != null ? incoming.end : existing.end;
  if (end != null) items.length = Math.min(items.length, end);
  return { items, end };
}

// A page comes from the cache only when every item of it is there: otherwise it is fetched.
function readPage(existing, { args }) {
  if (!existing) return undefined;
  if (existing.none) return null;
  const offset = (args && args._offset) || 0;
  const count = args && args._count;
  const end = existing.end == null ? Infinity : existing.end;
  const stop = count == null ? end : Math.min(offset + count, end);
  if (stop === Infinity) return undefined;
  for (let i = offset; i < stop; i += 1) if (existing.items[i] == null) return undefined;
  return existing.items.slice(offset, Math.max(offset, stop));
}

// Items matched on uid (within the one object holding the list): their paged lists combine.
function mergeByUid(pagedNames) {
  const isPaged = (storeFieldName) => pagedNames.includes(storeFieldName.split(/[:(]/)[0]);
  return (existing, incoming, { readField }) => {
    if (!existing) return incoming;
    const cached = new Map();
    for (const item of existing) {
      const uid = readField("uid", item);
      if (uid != null) cached.set(uid, item);
    }
    return incoming.map((item) => {
      const uid = readField("uid", item);
      const was = uid == null ? undefined : cached.get(uid);
      if (was === undefined || item.__ref || was.__ref) return item;
      const merged = { ...was, ...item };
      for (const name of Object.keys(item)) {
        if (isPaged(name) && was[name]) {
          merged[name] = combinePages(was[name], item[name], readField);
        }
      }
      return merged;
    });
  };
}

export const possibleTypes = generated.possibleTypes;

export const typePolicies = {};
for (const name of generated.resources) {
  typePolicies[name] = { keyFields: resourceKey };
}
for (const name of generated.unkeyed) {
  typePolicies[name] = { keyFields: false, merge: true };
}
for (const [name, fields] of Object.entries(generated.pagedFields)) {
  for (const [field, keyArgs] of Object.entries(fields)) {
    typePolicies[name].fields = { ...typePolicies[name].fields,
      [field]: { keyArgs, merge: mergePage, read: readPage } };
  }
}
for (const [name, fields] of Object.entries(generated.listsByUid)) {
  for (const [field, pagedNames] of Object.entries(fields)) {
    typePolicies[name].fields = { ...typePolicies[name].fields,
      [field]: { merge: mergeByUid(pagedNames) } };
  }
}

// The cache ids of every cached version of a resource (say, the study a delete event names):
// cache.identify needs the versionId as well, which an event or a route may not have.
export function cachedVersions(cache, typename, id) {
  const exact = `${typename}:${JSON.stringify({ id })}`;
  const versioned = `${exact.slice(0, -1)},`;
  return Object.keys(cache.extract()).filter((k) => k === exact || k.startsWith(versioned));
}

// Evicts every cached version of a resource and what only they held; how many were cached.
export function evictResource(cache, typename, id) {
  const ids = cachedVersions(cache, typename, id);
  for (const cacheId of ids) cache.evict({ id: cacheId });
  if (ids.length) cache.gc();
  return ids.length;
}

export default { possibleTypes, typePolicies, cachedVersions, evictResource };
"""


def _roots(schema: GraphQLSchema) -> set[str]:
    return {
        t.name
        for t in (schema.query_type, schema.mutation_type, schema.subscription_type)
        if t is not None
    }


def _is_list(type_: Any) -> bool:
    return isinstance(get_nullable_type(type_), GraphQLList)


def config(schema: GraphQLSchema) -> dict[str, Any]:
    """The schema's facts the cache needs: abstract types' members, resource types, unkeyed
    types, per type the paged list fields (with the arguments that tell their lists apart),
    and the lists whose items are matched on `uid` (with the paged fields of those items)."""
    roots = _roots(schema)
    objects = sorted(
        (
            t
            for name, t in schema.type_map.items()
            if isinstance(t, GraphQLObjectType) and not name.startswith("__") and name not in roots
        ),
        key=lambda t: t.name,
    )
    resources = [t.name for t in objects if all(f in t.fields for f in RESOURCE_FIELDS)]
    pages = [
        (type_.name, name, field)
        for type_ in objects
        for name, field in type_.fields.items()
        if _is_list(field.type)
        and all(a in field.args for a in PAGE_ARGS)
        and "uid" in getattr(get_named_type(field.type), "fields", {})
    ]
    holders: dict[str, list[str]] = {}
    for owner, name, _ in pages:
        holders.setdefault(owner, []).append(name)
    paged: dict[str, dict[str, list[str]]] = {}
    by_uid: dict[str, dict[str, list[str]]] = {}
    for owner, name, field in pages:
        item = get_named_type(field.type)
        if item.name not in holders:
            paged.setdefault(owner, {})[name] = sorted(a for a in field.args if a not in PAGE_ARGS)
    for type_ in objects:
        for name, field in type_.fields.items():
            item = get_named_type(field.type)
            if _is_list(field.type) and item.name in holders and "uid" in item.fields:
                by_uid.setdefault(type_.name, {})[name] = holders[item.name]
    return {
        "possibleTypes": {
            name: sorted(t.name for t in schema.get_possible_types(abstract))
            for name, abstract in sorted(schema.type_map.items())
            if is_abstract_type(abstract) and not name.startswith("__")
        },
        "resources": resources,
        "unkeyed": [t.name for t in objects if t.name not in resources],
        "pagedFields": paged,
        "listsByUid": by_uid,
    }


def module(schema: GraphQLSchema) -> str:
    """The ES module text for `schema`."""
    return _RUNTIME % json.dumps(config(schema), indent=2)


def endpoint(schema: strawberry.Schema) -> Callable[[Request], Awaitable[Response]]:
    """The route serving the module for `schema` (built once: the schema does not change)."""
    body = module(schema._schema)

    async def apollo_cache(_: Request) -> Response:
        return Response(body, media_type="text/javascript")

    return apollo_cache
