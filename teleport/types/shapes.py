"""The JSON shapes that travel as they are, named once for the emitters, the stores and the
API's wire models; apart from the resource models, so a module that only names them imports no
resource kind."""

from __future__ import annotations

from typing import Any

#: An audit event: a JSON object whose fields depend on its `event` type (the manual's table).
AuditEvent = dict[str, Any]

#: A resource (`kind`/`version`/`metadata`/`spec`) as `teleport.types.codec.to_dict` writes it:
#: how it travels.
ResourceJSON = dict[str, Any]
