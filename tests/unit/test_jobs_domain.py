"""Job endpoints and records (API.md §11): which synchronous routes a job may replay."""

from __future__ import annotations

import pytest
from threadgate.domain.errors import InvalidRequest
from threadgate.domain.jobs import new_job, parse_endpoint, without_stream


@pytest.mark.parametrize(
    ("path", "kind", "thread_id"),
    [
        ("/v1/messages", "messages", None),
        ("/v1/chat/completions", "chat", None),
        ("/v1/threads/thr_0a1b/messages", "thread_turn", "thr_0a1b"),
    ],
)
def test_the_three_synchronous_endpoints_are_accepted(path, kind, thread_id):
    endpoint = parse_endpoint(path)
    assert (endpoint.kind, endpoint.path, endpoint.thread_id) == (kind, path, thread_id)


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs", "/v1/messages/", "/v1/threads//messages", "/v1/threads/a/b/messages", "/v1/threads/x/messages?y=1",
     "v1/messages", "", None, 42, "/v1/threads/" + "x" * 201 + "/messages"],
)
def test_anything_else_is_a_400_naming_endpoint(path):
    with pytest.raises(InvalidRequest) as refused:
        parse_endpoint(path)
    assert refused.value.param == "endpoint" and refused.value.message.startswith("endpoint:")


def test_a_new_job_is_queued_and_names_its_model_and_ignores_stream():
    body = without_stream({"model": "claude-haiku-4-5", "max_tokens": 5, "stream": True, "messages": []})
    job = new_job("job_1", account_id="acct", key_id="key", endpoint=parse_endpoint("/v1/messages"), body=body,
                  now_ms=7)
    assert (job.status, job.model, job.created_at, job.finished) == ("queued", "claude-haiku-4-5", 7, False)
    assert "stream" not in job.body
    nameless = new_job("job_2", account_id="a", key_id="k", endpoint=parse_endpoint("/v1/messages"),
                       body={"model": 3}, now_ms=1)
    assert nameless.model is None
