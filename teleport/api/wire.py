"""The two kinds of body every API model is: a strict request, a tolerant answer.

Apart from the models themselves, so that a command imports only the models it sends and reads
(each model class costs start-up time). Neither keeps the strings it decodes (`cache_strings`),
for the reason `teleport.types.resource.Model` gives.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    """A request body: strict types, unknown fields ignored (older clients, newer servers)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", defer_build=True,
                              cache_strings=False)


class Answer(BaseModel):
    """An answer body: unknown fields ignored, so a newer server can add some."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True, cache_strings=False)
