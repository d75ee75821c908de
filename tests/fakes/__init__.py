"""Fakes of the edges we cannot run here (LLM upstreams, webhook receivers), served over real
HTTP on 127.0.0.1 by `servers.serve_asgi`. Each fake is checked against the real client library."""
