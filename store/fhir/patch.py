"""JSON Patches (RFC 6902) between two versions of a study: what history keeps per version.

History keeps, per version, the patch that turns the next version back into it (a reverse
patch), so its size follows what a write changed, not the size of the study. Only the three
operations `add`, `remove` and `replace` are made, with RFC 6901 paths, so any RFC 6902 tool
reads them. The diff is purpose-built rather than a general library's: a study's arrays change
by a run of elements appended, inserted or removed (instances arrive in number order, series
leave whole), which a common prefix and suffix find in one linear pass over elements that are
mostly the very same objects; a general minimal-edit diff of a 50,000-instance array would
cost more than the write. `apply` copies only the containers on the paths it changes and
shares the rest with its input, so rebuilding k versions of a large study costs k patches,
not k copies; the versions it returns must be treated as read-only, like every study read.
A member added back goes last in its object: JSON objects are unordered (RFC 8259)."""

from __future__ import annotations

from typing import Any

Op = dict[str, Any]
__all__ = ["Op", "apply", "diff", "equal"]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"a JSON Pointer starts with '/': {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def equal(a: Any, b: Any) -> bool:
    """JSON equality that tells 1 from 1.0 and from true (Python's == does not), so a patch
    never drops a change of a value's JSON type."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def diff(source: Any, target: Any) -> list[Op]:
    """The operations that turn `source` into `target` (neither is changed)."""
    ops: list[Op] = []
    _diff(source, target, "", ops)
    return ops


def _diff(a: Any, b: Any, path: str, ops: list[Op]) -> None:
    if a is b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            if key not in b:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in b.items():
            if key in a:
                _diff(a[key], value, f"{path}/{_escape(key)}", ops)
            else:
                ops.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": value})
        return
    if isinstance(a, list) and isinstance(b, list):
        _diff_list(a, b, path, ops)
        return
    if not equal(a, b):
        ops.append({"op": "replace", "path": path, "value": b})


def _diff_list(a: list[Any], b: list[Any], path: str, ops: list[Op]) -> None:
    n, m = len(a), len(b)
    start = 0
    while start < n and start < m and equal(a[start], b[start]):
        start += 1
    end = 0
    while end < n - start and end < m - start and equal(a[n - 1 - end], b[m - 1 - end]):
        end += 1
    if n - start - end == m - start - end:  # the same number changed in place: element-wise
        for k in range(start, n - end):
            _diff(a[k], b[k], f"{path}/{k}", ops)
        return
    # A run removed and another added in its place; removed from the back, so each index
    # still names the element it meant when its operation applies.
    for k in range(n - end - 1, start - 1, -1):
        ops.append({"op": "remove", "path": f"{path}/{k}"})
    for k in range(start, m - end):
        ops.append({"op": "add", "path": f"{path}/{k}", "value": b[k]})


def apply(document: Any, ops: list[Op]) -> Any:
    """`document` with `ops` applied in order (RFC 6902 add, remove, replace); `document`
    itself is not changed: the containers on the changed paths are copied, once each."""
    holder = [document]
    made: set[int] = set()  # ids of the containers this call copied (alive in the result)

    def own(parent: Any, key: Any) -> Any:
        child = parent[key]
        if id(child) not in made:
            if isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise ValueError("a patch path goes through a value that holds no elements")
            parent[key] = child
            made.add(id(child))
        return child

    for op in ops:
        tokens = _tokens(op["path"])
        parent: Any = holder
        key: Any = 0
        for token in tokens:
            parent = own(parent, key)
            key = _key(parent, token)
        kind = op["op"]
        if not tokens:  # the whole document
            if kind not in ("add", "replace"):
                raise ValueError(f"cannot {kind} the whole document")
            holder[0] = op["value"]
        elif kind == "remove":
            del parent[key]
        elif kind == "add" and isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else key, op["value"])
        elif kind in ("add", "replace"):
            parent[key] = op["value"]
        else:
            raise ValueError(f"unsupported patch operation {kind!r}")
    return holder[0]


def _key(parent: Any, token: str) -> Any:
    if isinstance(parent, list):
        return token if token == "-" else int(token)
    return token
