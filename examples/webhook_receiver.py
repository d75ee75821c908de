"""A tool webhook receiver: verifies every delivery, dedupes retries, answers `lookup_account`.

Run it (the secret is the `wsk_...` value returned once when the tool is registered):

    WEBHOOK_SECRET=wsk_... python examples/webhook_receiver.py --port 9000

Register the tool with an admin key (plain http and 127.0.0.1 work where the deployment allows
private webhooks, as local mode does by default; otherwise use a public https URL):

    curl -s http://127.0.0.1:8080/v1/tools \
      -H "x-api-key: $THREADGATE_MASTER_KEY" -H "content-type: application/json" \
      -d '{"name": "lookup_account",
           "description": "Look up a customer account by id: plan and email.",
           "input_schema": {"type": "object",
                            "properties": {"account_id": {"type": "string"}},
                            "required": ["account_id"]},
           "webhook_url": "http://127.0.0.1:9000/tools/lookup_account",
           "timeout_ms": 10000}'

The answer contains `"secret": "wsk_..."`: restart this receiver with it as WEBHOOK_SECRET, then
pass the tool's id in `tools` when sending a thread message.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

try:
    from threadgate.webhooks import DELIVERY_HEADER, verify_request
except ModuleNotFoundError:  # run from a checkout: the package lives where the Lambda layer ships it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "threadgate" / "python"))
    from threadgate.webhooks import DELIVERY_HEADER, verify_request

DEFAULT_PORT = 9000

ACCOUNTS = {
    "acct_42": {"plan": "pro", "email": "ada@example.com"},
    "acct_7": {"plan": "free", "email": "grace@example.com"},
}


def lookup_account(tool_input: dict[str, Any]) -> dict[str, Any]:
    account = ACCOUNTS.get(str(tool_input.get("account_id", "")))
    if account is None:
        return {"output": "no such account", "is_error": True}  # the model sees this and can say so
    return {"output": dict(account), "is_error": False}


TOOLS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"lookup_account": lookup_account}


def create_app(secret: str, *, remember: int = 10_000) -> FastAPI:
    app = FastAPI(title="Threadgate tool receiver")
    # Retries carry the same X-Qlaud-Delivery: answer them from here instead of acting twice.
    # (In production keep this in your database, next to the effect of the tool.)
    answered: OrderedDict[str, dict[str, Any]] = OrderedDict()
    app.state.calls = 0  # how many times a tool really ran (for the demo and its test)

    @app.post("/tools/{name}")
    async def run_tool(name: str, request: Request) -> JSONResponse:
        body = await request.body()  # the raw bytes: the signature covers exactly these
        if not verify_request(secret, body, request.headers):
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        delivery_id = request.headers.get(DELIVERY_HEADER, "")
        if delivery_id in answered:
            return JSONResponse(answered[delivery_id])
        tool = TOOLS.get(name)
        if tool is None:
            return JSONResponse({"error": f"unknown tool {name}"}, status_code=404)
        delivery = await request.json()
        app.state.calls += 1
        answer = tool(delivery.get("input") or {})
        answered[delivery_id] = answer
        if len(answered) > remember:
            answered.popitem(last=False)
        return JSONResponse(answer)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret.startswith("wsk_"):
        parser.error("set WEBHOOK_SECRET to the wsk_ secret returned when the tool was registered")

    import uvicorn

    uvicorn.run(create_app(secret), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
