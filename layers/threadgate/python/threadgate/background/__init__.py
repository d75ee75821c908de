"""Everything that runs outside a client's request, in one place.

| module | what it does | local mode | AWS |
|---|---|---|---|
| `jobs_runner` | `/v1/jobs`: validate, store, hand a job to a runner; resume an interrupted job's run | in-process worker (asyncio tasks) | sends the job to the jobs SQS queue |
| `jobs_worker` | runs a queued job once (never twice; a thread turn's run resumes), marks dead letters failed | — | `jobs` Lambda (SQS event source) |
| `runs_recovery` | at start, ends the turns a dead process left running (thread valid, call settled) | server start | — (the next turn on the thread takes a dead turn's lock over) |
| `search_indexer` | keeps the search index in step with the threads table | — (`search_batcher`) | `indexer` Lambda (DynamoDB stream) |
| `search_batcher` | indexes ended turns' messages in batches within 100 ms; searches index what is pending first; a journal catches up after a crash | flusher thread | — |
| `tool_loop` | a run whose model asked for tools continues as a Step Functions execution: start it (named by the run id), run its steps | the request runs the loop (`domain.driver`) | StartExecution from `stream`/`jobs`; steps in the `loop` Lambda |
| `webhook_worker` | one webhook delivery attempt per SQS receive, answered by task token; dead letters end their task | — (in-process retries) | `webhooks` Lambda (webhook queue + its DLQ) |
| `invocation_hold` | keeps a Lambda invocation open until its request (a turn whose client left) is answered | — | `stream` Lambda: an internal extension (Extensions API) |

`sqs_batches` is the batch plumbing both SQS workers share (work queue and DLQ, one function).

Expired reservations are settled by `domain.metering.sweep_expired` (the `sweeper` Lambda on a
schedule on AWS; `python -m threadgate sweep` and the local server's periodic task locally).
"""
