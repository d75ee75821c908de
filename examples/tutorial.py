"""The "build a chat app" tutorial as one script: every step an app takes against Threadgate.

    python examples/tutorial.py --base-url http://127.0.0.1:8080 --master-key qlk_live_...

Steps: mint a capped per-user key and a thread on signup, send a turn, stream a turn, register a
tool and use it (if --webhook-url is given), search the user's history, read month-end usage.
Plain HTTP with httpx: no SDK needed. The model defaults to the offline `threadgate-local`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

try:
    from examples.webhook_receiver import DEFAULT_PORT
except ImportError:  # run as a script: its directory is on the path
    from webhook_receiver import DEFAULT_PORT


def signup(admin: httpx.Client, user_id: str, cap_usd: float) -> tuple[str, str]:
    """Step 1: on signup, a key capped at cap_usd bound to the user, and the user's thread."""
    key = admin.post("/v1/keys", json={"name": f"user {user_id}", "max_spend_usd": cap_usd,
                                       "end_user_id": user_id}).raise_for_status().json()
    user = httpx.Client(base_url=admin.base_url, headers={"x-api-key": key["secret"]}, timeout=120)
    thread = user.post("/v1/threads", json={"metadata": {"plan": "free"}}).raise_for_status().json()
    user.close()
    return key["secret"], thread["id"]


def send(user: httpx.Client, thread_id: str, text: str, model: str, **extra: Any) -> dict[str, Any]:
    """Step 2: one call per turn; the gateway loads the history server-side."""
    r = user.post(f"/v1/threads/{thread_id}/messages",
                  json={"model": model, "max_tokens": 300, "content": text, **extra})
    return r.raise_for_status().json()


def stream(user: httpx.Client, thread_id: str, text: str, model: str) -> str:
    """Step 3: token-by-token. Prints text deltas as they arrive; returns the whole text."""
    out = []
    with user.stream("POST", f"/v1/threads/{thread_id}/messages",
                     json={"model": model, "max_tokens": 300, "content": text, "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "content_block_delta" and event["delta"].get("type") == "text_delta":
                out.append(event["delta"]["text"])
                print(event["delta"]["text"], end="", flush=True)
            elif event["type"] == "qlaud.done":
                print(f"\n  [seq {event['seq']}, cost {event['cost_micros']} micro-USD]")
    return "".join(out)


TOOL_PROMPT_ACCOUNT = "acct_42"  # an account examples/webhook_receiver.py knows


def register_tool(admin: httpx.Client, webhook_url: str) -> tuple[dict[str, Any], bool]:
    """Step 4: register a webhook tool once (admin); keep the returned `secret` for the receiver.
    Returns (tool, whether it is new): a tool of that name registered earlier (by the curl
    tutorial, or a previous run) is reused; its secret was shown when it was registered."""
    r = admin.post("/v1/tools", json={
        "name": "lookup_account",
        "description": "Look up a customer account by id: plan and email.",
        "input_schema": {"type": "object", "properties": {"account_id": {"type": "string"}},
                         "required": ["account_id"]},
        "webhook_url": webhook_url,
    })
    if r.status_code == 409:
        tools = admin.get("/v1/tools").raise_for_status().json()["data"]
        return next(t for t in tools if t["name"] == "lookup_account"), False
    return r.raise_for_status().json(), True


def search(user: httpx.Client, query: str) -> list[dict[str, Any]]:
    """Step 5: semantic search over this user's own history (the key is bound to them)."""
    return user.get("/v1/search", params={"q": query, "limit": 3}).raise_for_status().json()["data"]


def month_end(admin: httpx.Client) -> dict[str, Any]:
    """Step 6: per-key usage for billing: cost_micros = upstream cost × markup."""
    return admin.get("/v1/usage").raise_for_status().json()


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except httpx.HTTPStatusError as err:  # a clear line, not a traceback
        try:
            message = err.response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = err.response.text[:200]
        print(f"error: {err.request.method} {err.request.url.path} answered {err.response.status_code}: {message}")
        return 1
    except httpx.TransportError as err:
        print(f"error: cannot reach the gateway ({type(err).__name__}); is it running? (--base-url)")
        return 1


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--master-key", required=True)
    parser.add_argument("--model", default="threadgate-local")
    parser.add_argument("--webhook-url", help="a running examples/webhook_receiver.py, e.g. "
                        f"http://127.0.0.1:{DEFAULT_PORT}/tools/lookup_account")
    args = parser.parse_args(argv)
    admin = httpx.Client(base_url=args.base_url, headers={"x-api-key": args.master_key}, timeout=120)

    secret, thread_id = signup(admin, "u_42", cap_usd=5)
    print(f"1. minted a $5 key for u_42 and thread {thread_id}")
    user = httpx.Client(base_url=args.base_url, headers={"x-api-key": secret}, timeout=120)
    answer = send(user, thread_id, "We talked about refunds: how do I get my money back?", args.model)
    print("2.", answer["content"][0]["text"])
    print("3. ", end="")
    stream(user, thread_id, "And how long does it take?", args.model)
    if args.webhook_url:
        tool, new = register_tool(admin, args.webhook_url)
        if new:
            print(f"4. registered {tool['id']}; start the receiver with WEBHOOK_SECRET={tool['secret']}")
            input("   press Enter once the receiver runs with that secret... ")
        else:
            print(f"4. using the tool lookup_account already registered ({tool['id']}) at {tool['webhook_url']};"
                  " its receiver needs the secret shown when it was registered")
        prompt = f'lookup_account {{"account_id": "{TOOL_PROMPT_ACCOUNT}"}}'
        answer = send(user, thread_id, prompt, args.model, tools=[tool["id"]])
        print("  ", answer["content"][-1]["text"])
    for hit in search(user, "refund"):
        print(f"5. {hit['score']:.2f}  seq {hit['seq']}  {hit['snippet'][:60]}")
    usage = month_end(admin)
    for row in usage["by_key"]:
        print(f"6. {row['key_name']}: {row['cost_micros']} micro-USD over {row['request_count']} calls")
    left = user.get("/v1/key").raise_for_status().json()["remaining_micros"]
    print(f"   u_42 has {left} micro-USD left")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
