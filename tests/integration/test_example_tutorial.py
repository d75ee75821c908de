"""examples/tutorial.py runs end to end against a live gateway (the tutorial an app follows)."""

from __future__ import annotations

from examples import tutorial


def test_tutorial_script_runs_and_finds_the_refund_turn(gateway, capsys):
    assert tutorial.main(["--base-url", gateway.url, "--master-key", gateway.admin_key]) == 0
    out = capsys.readouterr().out
    assert "1. minted a $5 key for u_42" in out
    assert "2. Echo: We talked about refunds" in out
    assert "[seq 4, cost" in out  # the streamed turn was persisted as the 4th message
    assert "5. " in out and "refunds" in out.split("5. ", 1)[1]
    assert "6. user u_42:" in out and "u_42 has" in out


def test_after_the_curl_tutorial_the_script_reuses_the_tool_and_finds_the_account(gateway_factory, capsys,
                                                                                   monkeypatch):
    """The README's order: the curl tutorial registers `lookup_account` and starts the receiver
    with its secret; then the script runs (twice, even) without a traceback, and the tool step
    finds the account the tutorial asks for."""
    from examples import webhook_receiver

    from tests.fakes.servers import serve_asgi
    from tests.integration.test_tutorial_local import LateApp

    gw = gateway_factory(mode="local")  # loopback webhooks allowed, as in make dev
    late = LateApp()
    monkeypatch.setattr("builtins.input", lambda prompt="": "")
    with serve_asgi(late) as hook:
        url = f"{hook}/tools/lookup_account"
        with gw.admin() as admin:  # step 4 of the curl tutorial
            tool = admin.post("/v1/tools", json={"name": "lookup_account", "description": "Look up an account",
                                                 "input_schema": {"type": "object"}, "webhook_url": url}).json()
        late.app = webhook_receiver.create_app(tool["secret"])
        for _ in range(2):
            assert tutorial.main(["--base-url", gw.url, "--master-key", gw.admin_key, "--webhook-url", url]) == 0
            out = capsys.readouterr().out
            assert f"4. using the tool lookup_account already registered ({tool['id']})" in out
            assert "ada@example.com" in out and "no such account" not in out


def test_the_readme_tool_step_asks_for_an_account_the_example_receiver_knows():
    import re
    from pathlib import Path

    from examples import webhook_receiver

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    asked = re.findall(r'lookup_account \{\\"account_id\\":\\"(\w+)\\"\}', readme)
    assert asked and all(a in webhook_receiver.ACCOUNTS for a in asked), asked
    assert tutorial.TOOL_PROMPT_ACCOUNT in webhook_receiver.ACCOUNTS
