"""`make chat`: the reference chat app on http://127.0.0.1:8090, with a gateway of its own.

    python -m examples.chat                      # starts a local gateway too (data: .threadgate-chat/)
    python -m examples.chat --gateway URL --master-key KEY   # use a gateway you already run

The gateway it starts is a normal local-mode gateway (`python -m threadgate serve`) on a free port
with its own data directory and an admin key kept in that directory (0600); the offline model
answers unless provider keys are set. Stop both with Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import uvicorn

from examples.chat.app import create_chat_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.chat", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--gateway", help="URL of a running gateway (default: start one)")
    parser.add_argument("--master-key", default=os.environ.get("THREADGATE_MASTER_KEY"),
                        help="its admin key (default: $THREADGATE_MASTER_KEY)")
    parser.add_argument("--data-dir", type=Path, default=Path(".threadgate-chat"))
    parser.add_argument("--cap-usd", type=float, default=1.0, help="spend cap of each new end user's key")
    parser.add_argument("--model", default="threadgate-local")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.gateway:
            if not args.master_key:
                parser.error("--gateway needs --master-key (or THREADGATE_MASTER_KEY)")
            gateway_url, master_key = args.gateway.rstrip("/"), args.master_key
        else:
            gateway_url, master_key = stack.enter_context(local_gateway(args.data_dir))
        public = f"http://127.0.0.1:{args.port}"
        app = create_chat_app(gateway_url, master_key, data_dir=args.data_dir, public_url=public,
                              cap_usd=args.cap_usd, model=args.model)
        print(f"chat app: {public}   (gateway {gateway_url}; operator console {gateway_url}/console/)", flush=True)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


@contextlib.contextmanager
def local_gateway(data_dir: Path) -> Iterator[tuple[str, str]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "master-key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("qlk_live_" + os.urandom(32).hex())
    master_key = key_file.read_text().strip()
    with socket.socket() as probe:  # a free port for the gateway
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "THREADGATE_MODE": "local", "THREADGATE_PORT": str(port),
           "THREADGATE_DATA_DIR": str(data_dir / "gateway"), "THREADGATE_MASTER_KEY": master_key}
    gateway = subprocess.Popen([sys.executable, "-m", "threadgate", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the gateway did not start (see its output above)")
            time.sleep(0.2)
        yield url, master_key
    finally:
        gateway.terminate()
        gateway.wait(timeout=10)


if __name__ == "__main__":
    main()
