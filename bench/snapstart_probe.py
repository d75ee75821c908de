"""One SnapStart life of the `api` function in this interpreter, timed (run by coldstart_bench.py,
once per fresh interpreter): load the handler, run the before-snapshot hooks, then the
after-restore hooks, then serve the first request. And, for comparison, the same first request
in an environment without SnapStart (the runtime is then built inside it).

The AWS side is moto (in-process), so the network calls after_restore makes (Secrets Manager for
the provider keys) cost moto's time, not AWS's: read the numbers against each other.

    python bench/snapstart_probe.py snapstart|plain   -> one JSON line of milliseconds
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "THREADGATE_MODE": "aws", "THREADGATE_PROVIDER_SECRETS_PREFIX": "threadgate-bench/providers/",
    "POWERTOOLS_SERVICE_NAME": "threadgate", "POWERTOOLS_METRICS_NAMESPACE": "Threadgate",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def main(mode: str) -> dict[str, float]:
    os.environ.update(ENV)
    from moto import mock_aws

    with mock_aws():
        import boto3
        import snapshot_restore_py

        from threadgate.config import get_settings
        from threadgate.stores.dynamodb import create_tables
        from threadgate.stores.dynamodb.schema import TABLES
        from tests.unit.test_handlers import LambdaContext, rest_event

        for spec in TABLES.values():
            os.environ[f"THREADGATE_{spec.settings_field.upper()}"] = f"tg-bench-{spec.logical.replace('_', '-')}"
        get_settings.cache_clear()
        create_tables(boto3.client("dynamodb"), get_settings())
        boto3.client("secretsmanager").create_secret(Name="threadgate-bench/providers/anthropic",
                                                     SecretString="sk-ant-bench")
        times: dict[str, float] = {}
        start = time.perf_counter()
        spec = importlib.util.spec_from_file_location("api_handler", ROOT / "functions" / "api" / "api_handler.py")
        handler = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(handler)
        times["init_ms"] = _ms(start)
        if mode == "snapstart":
            start = time.perf_counter()
            for func, args, kwargs in reversed(snapshot_restore_py.get_before_snapshot()):
                func(*args, **kwargs)
            times["before_snapshot_ms"] = _ms(start)
            start = time.perf_counter()
            for func, args, kwargs in snapshot_restore_py.get_after_restore():
                func(*args, **kwargs)
            times["after_restore_ms"] = _ms(start)
        start = time.perf_counter()
        # After a restore the runtime is there already; without SnapStart this request builds it.
        response = handler.handler(rest_event("GET", "/v1/models", key="qlk_live_" + "0" * 64),
                                   LambdaContext(function_name="threadgate-api"))
        assert response["statusCode"] == 401, response  # a full request: auth read from DynamoDB
        times["first_request_ms"] = _ms(start)
        return times


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT)]
    print(json.dumps(main(sys.argv[1])))
