"""Claim a key for one owner: create it, or replace it only while the same owner holds it.

Host names (presence) and live sessions are both bound to the host that first wrote them. The
check and the write must be one step, or two writers could each see the key as theirs; so the
replacement is a compare-and-swap against the item whose owner was checked, retried when
another write landed in between.
"""

from __future__ import annotations

from collections.abc import Callable

from teleport.backend.base import Backend, Item
from teleport.errors import AlreadyExists, CompareFailed, NotFound


async def claim(backend: Backend, item: Item, claimant: str, owner: Callable[[Item], str], *,
                refuse: Callable[[str], Exception], busy: str, vanished: Exception | None = None,
                attempts: int | None = 3) -> bool:
    """Write item for claimant unless another owner holds its key; True if it was created.

    refuse(current owner) is raised when another owner holds the key. When the key disappears
    between the checks, vanished is raised if given (a deleted key must not come back), else the
    claim starts over. CompareFailed(busy) is raised after `attempts` tries; None retries until
    a write lands, which never spins without progress: each failed swap means another write
    to the key succeeded.
    """
    tries = 0
    while attempts is None or tries < attempts:
        tries += 1
        try:
            await backend.create(item)
            return True
        except AlreadyExists:
            pass
        try:
            current = await backend.get(item.key)
        except NotFound:
            if vanished is not None:
                raise vanished from None
            continue
        holder = owner(current)
        if holder != claimant:
            raise refuse(holder)
        try:
            await backend.compare_and_swap(current, item)
            return False
        except CompareFailed:
            continue
        except NotFound:
            if vanished is not None:
                raise vanished from None
            continue
    raise CompareFailed(busy)
