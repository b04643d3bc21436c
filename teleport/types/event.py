"""The one name for an audit event, shared by the emitters and the auth API's wire models."""

from __future__ import annotations

from typing import Any

#: An audit event: a JSON object whose fields depend on its `event` type (the manual's table).
AuditEvent = dict[str, Any]
