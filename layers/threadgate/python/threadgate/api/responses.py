"""A JSON response rendered with orjson: several times faster than json.dumps on our payloads
(whole assistant messages, usage reports), and it is on every request's path."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
