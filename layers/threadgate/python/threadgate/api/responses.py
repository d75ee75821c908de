"""A JSON response rendered with orjson (jsoncodec): several times faster than json.dumps on our payloads
(whole assistant messages, usage reports), and it is on every request's path."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from threadgate import jsoncodec


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return jsoncodec.dumps(content)
