"""/v1/usage: how much the caller keeps on the server, so they know what to delete.

Why: volumes run to gigabytes and every training job keeps its last checkpoint for a
continuation; a user who is told only "disk full" cannot tell which of their things to
remove. Sizes come from the rows, checkpoints from the files (jobs do not record theirs).
"""

from __future__ import annotations

from fastapi import APIRouter

from microforge.api.problems import problem_responses
from microforge.api.schemas import UsageItem, UsageOut
from microforge.api.state import OwnerDep, SessionDep, SessionScopedRoute, StateDep
from microforge.storage.queries import checkpoint_keys, stored_sizes

router = APIRouter(prefix="/v1", tags=["usage"], route_class=SessionScopedRoute)


@router.get(
    "/usage",
    response_model=UsageOut,
    summary="What you keep on the server: counts and bytes",
    responses=problem_responses(401),
)
def usage(session: SessionDep, owner: OwnerDep, state: StateDep) -> UsageOut:
    items = {
        kind: UsageItem(count=count, bytes=size)
        for kind, (count, size) in stored_sizes(session, owner.id).items()
    }
    sizes = [
        state.blobs.size(key)
        for key in checkpoint_keys(session, owner.id)
        if state.blobs.exists(key)
    ]
    items["checkpoints"] = UsageItem(count=len(sizes), bytes=sum(sizes))
    return UsageOut(**items, total_bytes=sum(item.bytes for item in items.values()))
