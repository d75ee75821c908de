"""The webhook worker's own policy: when a failed tool call is received again (issue #8). Its
behaviour end to end (SQS, Step Functions, real receivers) is in
tests/integration/test_step_functions_loop.py."""

from __future__ import annotations

import pytest

from threadgate.background.webhook_worker import MAX_RECEIVES, MAX_REQUEUE_S, ToolCallMessage, requeue_delay_s


def test_requeue_delay_grows_with_each_receive_within_its_jitter():
    for receive, ceiling in ((1, 10), (2, 40), (3, 160)):
        delays = {requeue_delay_s(receive, None, 10.0) for _ in range(200)}
        assert min(delays) >= ceiling // 2 and max(delays) <= ceiling, (receive, sorted(delays))
        assert len(delays) > 1  # jittered: calls failing together do not come back together


def test_retry_after_is_honoured_and_every_delay_is_bounded():
    assert requeue_delay_s(1, 7.0, 10.0) == 7
    assert requeue_delay_s(1, 0.2, 10.0) == 0
    assert requeue_delay_s(1, 86_400.0, 10.0) == MAX_REQUEUE_S
    assert requeue_delay_s(MAX_RECEIVES - 1, None, 1_000.0) == MAX_REQUEUE_S
    assert requeue_delay_s(2, None, 0.0) == 0  # tests: at once


@pytest.mark.parametrize("body", ["", "[]", "{}", '{"run_id": "r", "tool_use_id": "t"}', "not json"])
def test_a_message_that_names_no_tool_call_is_refused(body):
    with pytest.raises((ValueError, KeyError, TypeError)):
        ToolCallMessage.parse(body)


def test_a_tool_call_message_is_what_the_state_machine_sends():
    message = ToolCallMessage.parse('{"run_id": "req_1", "tool_use_id": "toolu_1", "task_token": "AQC..."}')
    assert message == ToolCallMessage("req_1", "toolu_1", "AQC...")
