"""The Apollo Client cache configuration for this schema: an ES module exporting `possibleTypes`
and `typePolicies` for `new InMemoryCache({ possibleTypes, typePolicies })`, generated from the
schema, served at /apollo-cache.js and printed by `imaging-api apollo-cache`.

Apollo keys every object with an `id` as `Typename:id`. Here only a resource's `id` names a
thing; a FHIR element's `id` (ImagingStudySeries.id, Coding.id, ...) is unique only inside its
resource, and the change event's `id` is the study's. So:

- a resource (a type with `resourceType`, `id` and `meta`) is keyed by its id and, when the
  query selects it, `meta.versionId`: a version's content never changes, and the versions that
  ImagingStudyHistory lists stay apart;
- every other type is unkeyed, kept inside the object that holds it, and merged into what is
  cached there (so a refetch adds fields instead of dropping those another query asked for).
  This includes series and instances: their `uid` is shared by every version of a study while
  their content differs from version to version, so keying them by `uid` would show one
  version's instances under another. Inside their study's version they cannot mix;
- a list paged with `_count`/`_offset` below the root whose items hold no paged list (a
  series' instances) keeps one list per filter: each page is written at its offset, and a page
  is read back from the cache once all of it is there (or the end of the list is known)."""

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

// One list per filter; each page is written at its offset. A short page marks the end. A
// page that disagrees with what is cached where they overlap (another version's list, once
// items were added or removed) starts the list again.
function mergePage(existing, incoming, { args, storage, readField }) {
  const offset = (args && args._offset) || 0;
  const count = args && args._count;
  let merged = existing ? existing.slice(0) : [];
  for (let i = 0; i < incoming.length; i += 1) {
    const cached = merged[offset + i];
    if (cached !== undefined && readField("uid", cached) !== readField("uid", incoming[i])) {
      merged = [];
      storage.end = undefined;
      break;
    }
  }
  for (let i = 0; i < incoming.length; i += 1) merged[offset + i] = incoming[i];
  if (count == null || incoming.length < count) {
    storage.end = offset + incoming.length;
    merged.length = Math.min(merged.length, storage.end);
  }
  return merged;
}

// A page comes from the cache only when every item of it is there: otherwise it is fetched.
function readPage(existing, { args, storage }) {
  if (!existing) return undefined;
  const offset = (args && args._offset) || 0;
  const count = args && args._count;
  const end = storage.end === undefined ? Infinity : storage.end;
  const stop = count == null ? end : Math.min(offset + count, end);
  if (stop === Infinity) return undefined;
  for (let i = offset; i < stop; i += 1) if (existing[i] === undefined) return undefined;
  return existing.slice(offset, stop);
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
  typePolicies[name].fields = {};
  for (const [field, keyArgs] of Object.entries(fields)) {
    typePolicies[name].fields[field] = { keyArgs, merge: mergePage, read: readPage };
  }
}

export default { possibleTypes, typePolicies };
"""


def _roots(schema: GraphQLSchema) -> set[str]:
    return {t.name for t in (schema.query_type, schema.mutation_type, schema.subscription_type)
            if t is not None}


def _is_list(type_: Any) -> bool:
    return isinstance(get_nullable_type(type_), GraphQLList)


def config(schema: GraphQLSchema) -> dict[str, Any]:
    """The schema's facts the cache needs: abstract types' members, resource types, unkeyed
    types, and per type the paged list fields with the arguments that tell their lists apart."""
    roots = _roots(schema)
    objects = sorted((t for name, t in schema.type_map.items()
                      if isinstance(t, GraphQLObjectType) and not name.startswith("__")
                      and name not in roots), key=lambda t: t.name)
    resources = [t.name for t in objects if all(f in t.fields for f in RESOURCE_FIELDS)]
    pages = [(type_.name, name, field) for type_ in objects
             for name, field in type_.fields.items()
             if _is_list(field.type) and all(a in field.args for a in PAGE_ARGS)]
    # Only a list whose items hold no paged list of their own: Apollo merges the items of a
    # list by position before the list's merge runs, so a page of series written at offset 1
    # would have its instance pages merged into those of the series cached at index 0.
    holders = {owner for owner, _, _ in pages}
    paged: dict[str, dict[str, list[str]]] = {}
    for owner, name, field in pages:
        if get_named_type(field.type).name not in holders:
            paged.setdefault(owner, {})[name] = sorted(a for a in field.args
                                                       if a not in PAGE_ARGS)
    return {
        "possibleTypes": {name: sorted(t.name for t in schema.get_possible_types(abstract))
                          for name, abstract in sorted(schema.type_map.items())
                          if is_abstract_type(abstract) and not name.startswith("__")},
        "resources": resources,
        "unkeyed": [t.name for t in objects if t.name not in resources],
        "pagedFields": paged,
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
