"""A typed collection of one resource kind under one backend prefix.

Every service is built from these so that encoding, expiry and NotFound messages are
handled once.
"""

from __future__ import annotations

import json
from typing import Generic, TypeVar

from teleport.backend.base import Backend, Item, key, range_end
from teleport.errors import AlreadyExists, NotFound
from teleport.types.codec import to_dict
from teleport.types.resource import Resource

R = TypeVar("R", bound=Resource)


class ResourceStore(Generic[R]):
    def __init__(self, backend: Backend, model: type[R], *prefix: str, noun: str) -> None:
        self.backend = backend
        self.model = model
        self.prefix = prefix
        self.noun = noun

    def key(self, name: str) -> bytes:
        if not name or "/" in name:
            raise NotFound(f"{self.noun} {name!r} not found")
        return key(*self.prefix, name)

    def _item(self, resource: R) -> Item:
        return Item(
            key=self.key(resource.metadata.name),
            value=json.dumps(to_dict(resource)).encode(),
            expires=resource.metadata.expires,
        )

    def _decode(self, item: Item) -> R:
        return self.model.model_validate_json(item.value)

    async def get(self, name: str) -> R:
        try:
            return self._decode(await self.backend.get(self.key(name)))
        except NotFound:
            raise NotFound(f"{self.noun} {name!r} not found") from None

    async def get_with_item(self, name: str) -> tuple[R, Item]:
        """The resource and the stored item it came from, to change it with `swap`."""
        try:
            item = await self.backend.get(self.key(name))
        except NotFound:
            raise NotFound(f"{self.noun} {name!r} not found") from None
        return self._decode(item), item

    async def swap(self, expected: Item, resource: R) -> R:
        """Replace the resource only if it is still what `expected` held (CompareFailed if not)."""
        try:
            await self.backend.compare_and_swap(expected, self._item(resource))
        except NotFound:
            raise NotFound(f"{self.noun} {resource.metadata.name!r} not found") from None
        return resource

    async def list(self) -> list[R]:
        start = key(*self.prefix) + b"/"
        return [self._decode(i) for i in await self.backend.get_range(start, range_end(start))]

    async def create(self, resource: R) -> R:
        try:
            await self.backend.create(self._item(resource))
        except AlreadyExists:
            raise AlreadyExists(f"{self.noun} {resource.metadata.name!r} already exists") from None
        return resource

    async def put(self, resource: R) -> R:
        await self.backend.put(self._item(resource))
        return resource

    async def update(self, resource: R) -> R:
        try:
            await self.backend.update(self._item(resource))
        except NotFound:
            raise NotFound(f"{self.noun} {resource.metadata.name!r} not found") from None
        return resource

    async def delete(self, name: str) -> None:
        try:
            await self.backend.delete(self.key(name))
        except NotFound:
            raise NotFound(f"{self.noun} {name!r} not found") from None
