"""The `import` and `export` commands: streaming FHIR JSON between files and a Target, with a
progress line on a terminal and a summary at the end."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from api.progress import Progress
from api.targets import RemoteError, Target
from store import files
from store.fhir.outcome import BAD_USER_INPUT, StoreError
from store.importer import REJECTED, EntryResult
from store.search import Params

CHUNK = 200  # NDJSON resources sent in one import call


@dataclass
class ImportReport:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (source, why)

    @property
    def ok(self) -> bool:
        return not self.counts[REJECTED] and not self.counts["unreadable"]

    def add(self, source: str, result: EntryResult) -> None:
        self.counts[result.status] += 1
        if result.status == REJECTED and result.outcome:
            issue = result.outcome["issue"][0]
            where = ", ".join(issue.get("expression", ()))
            self.problems.append((source, f"{where}: {issue['diagnostics']}".lstrip(": ")))

    def table(self) -> str:
        lines = [f"{'outcome':<12}{'resources':>10}"]
        for status in ("created", "updated", "unchanged", "rejected", "unreadable"):
            lines.append(f"{status:<12}{self.counts[status]:>10}")
        shown = self.problems[:20]
        lines += [f"  {source}: {why}" for source, why in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)


def _chunks(items: Iterable[files.Item]) -> Iterator[tuple[list[str], Any, bool]]:
    """(sources, payload) per call: a JSON document alone (a transaction stays whole), NDJSON
    lines gathered into batch Bundles of CHUNK resources."""
    batch: list[files.Item] = []
    for item in items:
        if item.line is not None:  # an NDJSON line
            batch.append(item)
            if len(batch) == CHUNK:
                yield _batch(batch)
                batch = []
        else:
            yield [item.source], item.payload, False
    if batch:
        yield _batch(batch)


def _batch(items: list[files.Item]) -> tuple[list[str], Any, bool]:
    return [i.source for i in items], {"resourceType": "Bundle", "type": "batch",
                                       "entry": [{"resource": i.payload} for i in items]}, True


async def run_import(target: Target, paths: list[str], dry_run: bool = False,
                     out: TextIO = sys.stderr) -> ImportReport:
    report = ImportReport()
    progress = Progress("imported" if not dry_run else "checked", out)

    def items() -> Iterator[files.Item]:
        for path in files.walk(paths):
            for item in files.read(path):
                if item.error:
                    report.counts["unreadable"] += 1
                    report.problems.append((item.source, item.error))
                else:
                    yield item

    for sources, payload, batched in _chunks(items()):
        try:
            results = await target.import_payload(payload, dry_run)
        except (StoreError, RemoteError) as error:
            if error.code != BAD_USER_INPUT:
                raise  # the store or server is unavailable: stop rather than skip everything
            report.counts["unreadable"] += len(sources)
            report.problems += [(source, str(error)) for source in sources]
            continue
        is_bundle = isinstance(payload, dict) and payload.get("resourceType") == "Bundle"
        for result in results:
            # A batch of NDJSON lines maps back line by line; a Bundle file by entry.
            source = sources[result.index] if batched else \
                sources[0] + (f" entry {result.index}" if is_bundle else "")
            report.add(source, result)
        progress.step(len(results), sources[-1])
    progress.done()
    return report


async def run_export(target: Target, params: Params, fmt: str, out: TextIO,
                     sort: str | None = None) -> int:
    studies = target.export(params, sort)
    if fmt == "bundle":
        return await files.write_bundle(studies, out, await target.count(params))
    return await files.write_ndjson(studies, out)


def open_output(path: str | None) -> TextIO:
    return sys.stdout if path in (None, "-") else Path(path).open("w", encoding="utf-8")
