"""The chat app's backend: sign-up/sign-in, a session cookie, and calls to the gateway.

Per end user it keeps (in a 0600 JSON file) a password hash and the end user's own capped gateway
key; the master key is used only to mint those keys and to register the app's one tool, whose
webhook (`/tools/order_status`) is served here too and verifies every delivery's signature.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
from fastapi import Cookie, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from threadgate.webhooks import verify_request

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "chat_session"
TOOL_NAME = "order_status"
TOOL = {
    "name": TOOL_NAME,
    "description": "Look up the shipping status of one of the user's orders by its id.",
    "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    "timeout_ms": 10_000,
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"content-security-policy": CSP, "x-frame-options": "DENY", "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer", "cache-control": "no-cache"}


class Credentials(BaseModel):
    username: str = Field(pattern=r"^[a-zA-Z0-9_.-]{3,40}$")
    password: str = Field(min_length=8, max_length=200)


class Turn(BaseModel):
    content: str = Field(min_length=1, max_length=20_000)


ThreadId = PathParam(pattern=r"^[A-Za-z0-9_-]{1,128}$")  # ids go into gateway paths


@dataclass
class AppState:
    """What the app keeps, in one 0600 JSON file: `users` (username -> password hash and salt,
    the end user's gateway key and its id) and `tool` (the registered tool's id and secret)."""

    path: Path
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    tool: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            self.users, self.tool = saved["users"], saved["tool"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole with owner-only permissions: it holds end users' gateway keys.
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"users": self.users, "tool": self.tool}, out)
        os.replace(tmp, self.path)


def _hash(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1).hex()


def create_chat_app(
    gateway_url: str,
    master_key: str,
    *,
    data_dir: Path,
    public_url: str,
    cap_usd: float = 1.0,
    model: str = "threadgate-local",
    max_tokens: int = 1024,
) -> FastAPI:
    """`public_url`: where the gateway can reach this app (its tool webhook)."""
    store = AppState(Path(data_dir) / "chat-app.json")
    sessions: dict[str, str] = {}  # session token -> username (in memory: a restart signs everyone out)
    gateway = httpx.AsyncClient(base_url=gateway_url, timeout=httpx.Timeout(30, read=600))
    webhook_url = public_url + "/tools/order_status"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_tool()
        yield
        await gateway.aclose()

    app = FastAPI(title="Threadgate chat example", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def as_master() -> dict[str, str]:
        return {"x-api-key": master_key}

    def user_of(session: str | None) -> dict[str, str] | None:
        name = sessions.get(session or "")
        return store.users.get(name) if name else None

    def unauthorized() -> JSONResponse:
        return JSONResponse({"error": "sign in first"}, status_code=401)

    async def ensure_tool() -> None:
        """Register the app's tool once; its signing secret is shown only at creation, so a tool
        whose secret this app does not hold is replaced."""
        tools = (await gateway.get("/v1/tools", headers=as_master())).raise_for_status().json()["data"]
        for tool in tools:
            if tool["name"] == TOOL_NAME:
                if store.tool.get("id") == tool["id"] and tool["webhook_url"] == webhook_url:
                    return
                await gateway.delete(f"/v1/tools/{tool['id']}", headers=as_master())
        created = await gateway.post("/v1/tools", headers=as_master(), json={**TOOL, "webhook_url": webhook_url})
        with store.lock:
            store.tool = {"id": created.raise_for_status().json()["id"], "secret": created.json()["secret"]}
            store.save()

    def start_session(username: str) -> Response:
        token = secrets.token_urlsafe(32)
        sessions[token] = username
        response = JSONResponse({"username": username})
        # HttpOnly: page scripts never see it; SameSite=Strict: other sites cannot post with it.
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=public_url.startswith("https://"))
        return response

    @app.post("/api/signup")
    async def signup(body: Credentials) -> Response:
        if body.username in store.users:
            return JSONResponse({"error": "that username is taken"}, status_code=409)
        end_user = f"chat_{body.username}"
        # The end user's own key: capped, and confined to this end user's threads and search.
        minted = await gateway.post("/v1/keys", headers=as_master(), json={
            "name": f"chat user {body.username}", "max_spend_usd": cap_usd, "end_user_id": end_user})
        minted.raise_for_status()
        key = minted.json()
        salt = secrets.token_bytes(16)
        with store.lock:
            store.users[body.username] = {"password": _hash(body.password, salt), "salt": salt.hex(),
                                          "key_id": key["id"], "key": key["secret"], "end_user_id": end_user}
            store.save()
        (await gateway.post("/v1/threads", headers={"x-api-key": key["secret"]}, json={})).raise_for_status()
        return start_session(body.username)

    @app.post("/api/login")
    async def login(body: Credentials) -> Response:
        record = store.users.get(body.username)
        expected = record["password"] if record else _hash("x" * 8, b"\0" * 16)  # same work either way
        given = _hash(body.password, bytes.fromhex(record["salt"]) if record else b"\0" * 16)
        if record is None or not hmac.compare_digest(expected, given):
            return JSONResponse({"error": "wrong username or password"}, status_code=401)
        return start_session(body.username)

    @app.post("/api/logout")
    async def logout(chat_session: str | None = Cookie(default=None)) -> Response:
        sessions.pop(chat_session or "", None)
        response = JSONResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def relay(user: dict[str, str], method: str, path: str, **kw: Any) -> Response:
        """The gateway's answer as it is (status and JSON), made with the end user's key."""
        r = await gateway.request(method, path, headers={"x-api-key": user["key"]}, **kw)
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    @app.get("/api/me")
    async def me(chat_session: str | None = Cookie(default=None)) -> Response:
        user = user_of(chat_session)
        if user is None:
            return unauthorized()
        r = await gateway.get("/v1/key", headers={"x-api-key": user["key"]})  # spent / cap / remaining
        return JSONResponse({"username": sessions[chat_session], "key": r.json()}, status_code=r.status_code)

    @app.get("/api/threads")
    async def threads(chat_session: str | None = Cookie(default=None)) -> Response:
        user = user_of(chat_session)
        return unauthorized() if user is None else await relay(user, "GET", "/v1/threads", params={"limit": 50})

    @app.post("/api/threads")
    async def new_thread(chat_session: str | None = Cookie(default=None)) -> Response:
        user = user_of(chat_session)
        return unauthorized() if user is None else await relay(user, "POST", "/v1/threads", json={})

    @app.get("/api/threads/{thread_id}/messages")
    async def history(thread_id: str = ThreadId, chat_session: str | None = Cookie(default=None)) -> Response:
        user = user_of(chat_session)
        if user is None:
            return unauthorized()
        return await relay(user, "GET", f"/v1/threads/{thread_id}/messages", params={"limit": 200})

    @app.get("/api/search")
    async def search(q: str, chat_session: str | None = Cookie(default=None)) -> Response:
        user = user_of(chat_session)
        return unauthorized() if user is None else await relay(user, "GET", "/v1/search", params={"q": q, "limit": 10})

    @app.post("/api/threads/{thread_id}/messages")
    async def send(body: Turn, thread_id: str = ThreadId, chat_session: str | None = Cookie(default=None)) -> Response:
        user = user_of(chat_session)
        if user is None:
            return unauthorized()
        path = f"/v1/threads/{thread_id}/messages"
        headers = {"x-api-key": user["key"]}
        thread = await gateway.get(f"/v1/threads/{thread_id}", headers=headers)
        if thread.status_code == 200 and thread.json()["title"] is None:  # name the chat after its first line
            await gateway.patch(f"/v1/threads/{thread_id}", headers=headers,
                                json={"title": body.content.strip().splitlines()[0][:60]})
        request = gateway.build_request("POST", path, headers=headers, json={
            "model": model, "max_tokens": max_tokens, "content": body.content, "stream": True,
            "tools": [store.tool["id"]]})
        upstream = await gateway.send(request, stream=True)
        if upstream.status_code != 200:  # refused before streaming: 402 at the cap, 404, 429 ...
            content = await upstream.aread()
            await upstream.aclose()
            return Response(content, status_code=upstream.status_code, media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():  # relayed as it arrives: token by token
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    @app.post("/tools/order_status")
    async def order_status(request: Request) -> Response:
        """The app's tool, called by the gateway (never by the browser): signature checked first."""
        raw = await request.body()
        if not store.tool or not verify_request(store.tool["secret"], raw, request.headers):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        order = str(json.loads(raw).get("input", {}).get("order_id", ""))
        status = ["processing", "shipped", "delivered"][sum(map(ord, order)) % 3] if order else "unknown"
        return JSONResponse({"output": {"order_id": order, "status": status}, "is_error": False})

    @app.get("/")
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in {"chat.js", "chat.css"}:
            return JSONResponse({"error": "not found"}, status_code=404)
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(STATIC / name, media_type=kind, headers=PAGE_HEADERS)

    return app
