"""The `stream` function as deployed, run on this machine.

What runs is what CDK ships: the function's code asset (`run.sh`) and the threadgate layer asset
from the synthesized cloud assembly, started the way the Web Adapter layer's `/opt/bootstrap`
wrapper starts a handler; Lambda Web Adapter (the crate release of the pinned layer) as the
extension that polls the Runtime API; the function's environment read from the synthesized
template. Only what cannot run here is stood in for:

- Lambda's Runtime + Extensions APIs and the function URL: cargo-lambda's emulator, behind the
  rewriting proxy that also freezes the sandbox as Lambda would (runtime_api_proxy.py);
- DynamoDB, KMS, SQS, Secrets Manager: a moto server, resources named by the template's logical
  ids and tables created from the template's own definitions;
- the model providers: the fakes, reached through ANTHROPIC_BASE_URL / OPENAI_BASE_URL;
- the environment's deploy-time values: an intrinsic the tier cannot stand in for fails loudly.

Two differences remain and are written in docs/deploy.md: the test reaches the function through
a function URL (payload 2.0) where API Gateway REST sends its proxy event (1.0) to the same
streaming invocation, and the app runs on this machine's Python 3.11 with the venv's packages
(Lambda: 3.12 and the deps layer).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
import httpx

from tests.infra.runtime_api_proxy import RuntimeApiProxy, Sandbox

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
LAMBDA_FUNCTION_NAME = "_"  # cargo-lambda's default function (its function URL: /lambda-url/_/...)
STARTUP_S = 60.0


@dataclass
class Deployed:
    """What the synthesized template says the stream function is."""

    environment: dict[str, Any]  # values may still be intrinsics ({"Ref": ...})
    handler: str
    task_root: Path  # the function's code asset
    layer_python: Path  # the threadgate layer asset's python/ (on Lambda: /opt/python)
    memory_mb: int
    timeout_s: int
    resources: dict[str, Any]


def deployed_stream_function(synth: Any) -> Deployed:
    props = synth.resources[synth.logical_id(synth.stack.stream_fn.function)]["Properties"]
    layer_python = next(
        path / "python" for layer in synth.of_type("AWS::Lambda::LayerVersion").values()
        if (path := synth.outdir / f"asset.{layer['Properties']['Content']['S3Key'].removesuffix('.zip')}")
        and (path / "python" / "threadgate").is_dir()
    )
    return Deployed(
        environment=props["Environment"]["Variables"],
        handler=props["Handler"],
        task_root=synth.outdir / f"asset.{props['Code']['S3Key'].removesuffix('.zip')}",
        layer_python=layer_python,
        memory_mb=props["MemorySize"],
        timeout_s=props["Timeout"],
        resources=synth.resources,
    )


class AwsStandIn:
    """A moto server and the resources a function's environment names, created from the template."""

    UNREACHABLE = "https://127.0.0.1:9"  # services with no stand-in here: any call fails loudly

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        from tests.conftest_dynamo import one_request_at_a_time

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self._serial = one_request_at_a_time()
        self._serial.__enter__()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.session = boto3.session.Session(region_name=REGION, aws_access_key_id="testing",
                                              aws_secret_access_key="testing")

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)

    def close(self) -> None:
        self._serial.__exit__(None, None, None)
        self._server.stop()

    def resolve(self, environment: dict[str, Any], resources: dict[str, Any]) -> dict[str, str]:
        """The environment with each intrinsic replaced by the stand-in resource it names."""
        return {name: value if isinstance(value, str) else self._stand_in(name, value, resources)
                for name, value in environment.items()}

    def _stand_in(self, name: str, value: dict[str, Any], resources: dict[str, Any]) -> str:
        if value.get("Ref") == "AWS::Region":  # a pseudo parameter: the stand-ins' region
            return REGION
        if "Ref" in value:
            logical, attribute = value["Ref"], "Ref"
        elif "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
        else:
            raise AssertionError(f"{name}: no stand-in for {value}")
        resource = resources[logical]
        kind = (resource["Type"], attribute)
        if kind == ("AWS::DynamoDB::Table", "Ref"):
            props = resource["Properties"]
            self.client("dynamodb").create_table(
                TableName=logical, BillingMode="PAY_PER_REQUEST",
                **{k: props[k] for k in ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes",
                                         "LocalSecondaryIndexes") if k in props},
            )
            return logical
        if kind == ("AWS::KMS::Key", "Arn"):
            return self.client("kms").create_key()["KeyMetadata"]["Arn"]
        if kind == ("AWS::SQS::Queue", "Ref"):
            return self.client("sqs").create_queue(QueueName=logical)["QueueUrl"]
        if kind == ("AWS::StepFunctions::StateMachine", "Ref"):  # tool turns (not run by this tier)
            return self.client("stepfunctions").create_state_machine(
                name=logical, roleArn=f"arn:aws:iam::123456789012:role/{logical}",
                definition='{"StartAt": "Idle", "States": {"Idle": {"Type": "Pass", "End": true}}}',
            )["stateMachineArn"]
        if kind == ("AWS::OpenSearchServerless::Collection", "CollectionEndpoint"):
            return self.UNREACHABLE  # no OpenSearch data plane here; a turn never calls it on AWS
        raise AssertionError(f"{name}: the tier has no stand-in for {resource['Type']} {attribute}")

    def put_secret(self, name: str, value: str) -> None:
        self.client("secretsmanager").create_secret(Name=name, SecretString=value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}:\n{log.read_text()[-3000:]}")


@dataclass
class StreamFunction:
    url: str  # the function URL: append /v1/...
    sandbox: Sandbox
    logs: dict[str, Path]

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")


@contextlib.contextmanager
def running_stream_function(
    deployed: Deployed, environment: dict[str, str], *, lwa: Path, cargo_lambda: Path, workdir: Path,
    refuse_extensions: frozenset[str] = frozenset(),
) -> Iterator[StreamFunction]:
    """Emulator → proxy → LWA → run.sh (uvicorn + the app), as one Lambda execution environment.
    `environment` is the function's resolved environment plus what the stand-ins need."""
    crate = workdir / "emulator"  # cargo-lambda wants a Cargo.toml where it runs; any crate will do
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "emulator"\nversion = "0.0.0"\nedition = "2021"\n')
    (crate / "src" / "main.rs").write_text("fn main() {}\n")
    logs = {name: workdir / f"{name}.log" for name in ("emulator", "adapter", "app")}
    processes: list[subprocess.Popen] = []
    sandbox = Sandbox(refused_extensions=set(refuse_extensions))
    with contextlib.ExitStack() as stack:
        def stop_all() -> None:
            sandbox.thaw()  # a stopped process would not see its SIGTERM
            for process in reversed(processes):
                process.terminate()
            for process in reversed(processes):
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

        stack.callback(stop_all)
        emulator_port = free_port()
        processes.append(subprocess.Popen(
            [str(cargo_lambda), "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1",
             "-P", str(emulator_port), "--timeout", str(deployed.timeout_s)],
            cwd=crate, stdout=logs["emulator"].open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ))
        wait_for_port(emulator_port, processes[-1], "cargo-lambda", logs["emulator"])
        proxy = stack.enter_context(RuntimeApiProxy(emulator_port, sandbox))
        app_port = free_port()
        lambda_env = {
            **environment,
            # What Lambda itself sets in every execution environment.
            "AWS_LAMBDA_RUNTIME_API": proxy.address,
            "AWS_LAMBDA_FUNCTION_NAME": LAMBDA_FUNCTION_NAME,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(deployed.memory_mb),
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
            "LAMBDA_TASK_ROOT": str(deployed.task_root),
            "_HANDLER": deployed.handler,
            # The one value changed: the stack's fixed port would collide with other test runs.
            "AWS_LWA_PORT": str(app_port),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # `python` = this venv
            "PYTHONPATH": str(deployed.layer_python),  # /opt/python: the layer asset, ahead of the venv's copy
            "HOME": os.environ.get("HOME", "/tmp"),
        }
        # Lambda starts extensions (LWA, from the layer's /opt/extensions) before the runtime.
        processes.append(subprocess.Popen(
            [str(lwa)], env=lambda_env, stdout=logs["adapter"].open("w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        ))
        # The layer's /opt/bootstrap, which AWS_LAMBDA_EXEC_WRAPPER names, verbatim.
        assert environment["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
        processes.append(subprocess.Popen(
            ["bash", "-c", 'exec -- "${LAMBDA_TASK_ROOT}/${_HANDLER}"'], env=lambda_env,
            stdout=logs["app"].open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ))
        sandbox.pids[:] = [p.pid for p in processes[1:]]
        url = f"http://127.0.0.1:{emulator_port}/lambda-url/{LAMBDA_FUNCTION_NAME}"
        deadline = time.monotonic() + STARTUP_S
        while True:  # the first invocation also waits out the function's init
            try:
                if httpx.get(url + "/health", timeout=STARTUP_S).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            for name, process in zip(("adapter", "app"), processes[1:]):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{logs[name].read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the function did not answer /health:\n" + logs["app"].read_text()[-3000:])
            time.sleep(0.2)
        yield StreamFunction(url=url, sandbox=sandbox, logs=logs)

