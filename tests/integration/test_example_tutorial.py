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
