"""ImagingStudyChanged: an event after each committed write, over graphql-transport-ws.

Every event has a `position`; a subscriber back after a disconnect passes the last one it got
as `after` and first receives what it missed, in order, then the live events (store/mongo/events.py
says how far back that reaches). Replayed or live, each event passes the same filters and the
same access decision (`ScopedStore.visible`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextvars import ContextVar
from typing import Annotated, Any

import strawberry

from api.access.audit import delivered
from api.graphql.context import Info
from api.graphql.fhirpath_ahead import expressions
from api.graphql.limits import rejected
from api.graphql.types.imaging_study import ImagingStudy
from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, fail
from store.fhir.references import unversioned
from store.mongo.events import Change, Overrun

# The change whose event the current operation task is about to send: lets the WebSocket
# encode it once for every subscriber with the same operation (api/http/websocket.py).
delivering: ContextVar[Change | None] = ContextVar("delivering", default=None)


@strawberry.type(description="A committed change to a study.")
class ImagingStudyChangeEvent:
    action: str = strawberry.field(description="create, update or delete.")
    id: strawberry.ID = strawberry.field(description="The study's id.")
    versionId: str = strawberry.field(description="The version the write made.")
    status: str | None = strawberry.field(
        description="The study's status after the write; for a delete, the status the study had."
    )
    subject: str | None = strawberry.field(
        description="The study's subject reference "
        "(Patient/123); for a delete, the subject the "
        "study had."
    )
    resource: Study | None = strawberry.field(
        graphql_type=ImagingStudy | None,
        description="The study after the write (null for a delete).",
    )
    position: str = strawberry.field(
        description="Where this event stands in the change "
        "stream, an opaque string: pass the last one received "
        "as `after` when subscribing again to get what was "
        "missed."
    )


def _matches(
    change: Change,
    id: str | None,
    patient: str | None,
    status: str | None,
    visible: Callable[[Change], bool],
) -> bool:
    if id is not None and change.id != id:
        return False
    subject = unversioned(change.patient) if change.patient is not None else None
    if patient is not None and subject != (patient if "/" in patient else f"Patient/{patient}"):
        return False
    if status is not None and change.status not in status.split(","):
        return False
    return visible(change)  # the access gate's decision


def _arg(description: str) -> Any:
    return strawberry.argument(description=description)


# `@strawberry.subscription(...)` with arguments is typed as returning Any
# (strawberry-graphql/strawberry#1929), hence ignore[untyped-decorator].
@strawberry.type
class Subscription:
    @strawberry.subscription(
        name="ImagingStudyChanged",  # type: ignore[untyped-decorator]
        description="Events after each "
        "committed write, optionally only for one study, patient or "
        "status.",
    )
    async def changed(
        self,
        info: Info,
        id: Annotated[strawberry.ID | None, _arg("Only this study.")] = None,
        patient: Annotated[
            str | None,
            _arg("Only this patient: Patient/123 or 123 (a delete: the subject the study had)."),
        ] = None,
        status: Annotated[
            str | None,
            _arg(
                "Only studies now in this status, a delete by "
                "the status the study had (comma: any of "
                "them)."
            ),
        ] = None,
        after: Annotated[
            str | None,
            _arg(
                "Resume: the `position` of the last event received. The events since then are "
                "sent first, in order, then the live ones. RESUME_UNAVAILABLE when they can no "
                "longer be replayed: read the studies again and subscribe without it."
            ),
        ] = None,
    ) -> AsyncGenerator[ImagingStudyChangeEvent, None]:
        context = info.context
        _refuse_fhirpath(info)
        visible = context.store.visible("ImagingStudyChanged")
        context.metrics_subscriptions(1)
        try:
            async with context.events.subscribe(after) as changes:
                async for change in changes:
                    if _matches(change, id, patient, status, visible):
                        delivered(context, "ImagingStudyChanged", change.id, change.subject)
                        delivering.set(change)
                        yield ImagingStudyChangeEvent(
                            action=change.action,
                            id=strawberry.ID(change.id),
                            versionId=change.version_id,
                            status=change.status,
                            subject=change.subject,
                            resource=change.resource,
                            position=change.position,
                        )
        except Overrun as overrun:  # an error event, then complete: it must resubscribe
            raise rejected(
                "events queued for this subscriber", overrun.backlog, overrun.backlog + 1
            ) from None
        finally:
            context.metrics_subscriptions(-1)


def _refuse_fhirpath(info: Info) -> None:
    """FHIRPath (a repeating element's `fhirpath`, @slice's `path`) is not evaluated in
    subscriptions: each event would evaluate it on the event loop once per subscriber, with
    no operation to bound it (found black-box: three subscriptions held the loop 12 s per
    write)."""
    raw = info._raw_info  # the field's own nodes: what this subscription selects
    # graphql-core 3.3 types them as VariableValues; as Strawberry runs it, a plain dict.
    given: Any = raw.variable_values
    variables = getattr(given, "coerced", given) or {}
    # Its fragments too, wherever they are spread.
    for node in [*raw.field_nodes, *raw.fragments.values()]:
        for _ in expressions(node, variables):
            raise fail(
                BAD_USER_INPUT,
                "fhirpath",
                "FHIRPath (fhirpath, @slice(path:)) is not evaluated in subscriptions: "
                "filter the event's resource in the client, or query with it when an event "
                "arrives",
            )
