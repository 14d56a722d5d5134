"""The `import` and `export` commands: streaming FHIR JSON between files and a Target, with a
progress line on a terminal and a summary at the end."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from api.transfer.progress import Progress
from api.transfer.targets import RemoteError, Target
from store.fhir.outcome import BAD_USER_INPUT, OutcomeError, more_issues
from store.fhir.validate import ROOT
from store.interop import files
from store.interop.importer import REJECTED, EntryResult
from store.mongo.search import Params

CHUNK = 200  # NDJSON resources sent in one import call


_ENTRY = re.compile(r"^Bundle\.entry\[\d+\]\.resource")


@dataclass
class ImportReport:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.counts[REJECTED] and not self.counts["unreadable"]

    def add(self, source: str, result: EntryResult, line: bool = False) -> None:
        """Counts one entry's result; a rejection is listed under `source`. An NDJSON `line`
        was sent as an entry of a batch Bundle of lines: its source names the line, so its
        issues name the resource (`ImagingStudy.status`), not that made-up entry."""
        self.counts[result.status] += 1
        if result.status == REJECTED and result.outcome:
            issues = result.outcome["issue"]
            where = ", ".join(
                _ENTRY.sub(ROOT, path) if line else path for path in issues[0].get("expression", ())
            )
            why = f"{where}: {issues[0]['diagnostics']}".lstrip(": ")
            self.problems.append((source, why + more_issues(len(issues) - 1)))

    def table(self) -> str:
        lines = [f"{'outcome':<12}{'resources':>10}"]
        for status in ("created", "updated", "unchanged", "rejected", "unreadable"):
            lines.append(f"{status:<12}{self.counts[status]:>10}")
        shown = self.problems[:20]
        lines += [f"  {source}: {why}" for source, why in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        if self.dry_run:
            lines.append(
                "dry run: nothing was written; the counts say what an import would have done"
            )
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
    return (
        [i.source for i in items],
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": i.payload} for i in items],
        },
        True,
    )


async def run_import(
    target: Target, paths: list[str], dry_run: bool = False, out: TextIO = sys.stderr
) -> ImportReport:
    report = ImportReport(dry_run=dry_run)
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
        except (OutcomeError, RemoteError) as error:
            if error.code != BAD_USER_INPUT:
                raise  # the store or server is unavailable: stop rather than skip everything
            report.counts["unreadable"] += len(sources)
            report.problems += [(source, str(error)) for source in sources]
            continue
        for result in results:
            # A batch of NDJSON lines maps back line by line; in a Bundle file, the issue
            # names the entry (Bundle.entry[2].resource.status).
            report.add(sources[result.index] if batched else sources[0], result, batched)
        progress.step(len(results), sources[-1])
    progress.done()
    return report


async def run_export(
    target: Target, params: Params, fmt: str, out: TextIO, sort: str | None = None
) -> int:
    studies = target.export(params, sort)
    if fmt == "bundle":
        return await files.write_bundle(studies, out, await target.count(params))
    return await files.write_ndjson(studies, out)


def open_output(path: str | None) -> TextIO:
    return sys.stdout if path in (None, "-") else Path(path).open("w", encoding="utf-8")
