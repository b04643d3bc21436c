"""What `/readyz` reports: each component says whether it is serving, and why not."""

from __future__ import annotations


class Health:
    """Readiness per component; the process is ready when every component is."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}
        self._components: set[str] = set()

    def register(self, component: str, starting: str = "starting") -> None:
        self._components.add(component)
        self._problems[component] = starting

    def ok(self, component: str) -> None:
        self._problems.pop(component, None)

    def degraded(self, component: str, reason: str) -> None:
        self._problems[component] = reason

    def problems(self) -> dict[str, str]:
        return dict(self._problems)
