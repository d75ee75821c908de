"""Route modules load on first need (api/app.py ROUTE_MODULES): the table must name every path a
module serves, or a request could miss its route (a 404 where the app serves it, a 405 naming
too few methods)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Match

import threadgate.api.routes
from threadgate.api.app import ROUTE_MODULES, create_app, route_modules_for
from threadgate.runtime import build
from tests.conftest import make_settings


def _route_paths(name: str) -> list[str]:
    router = importlib.import_module(f"threadgate.api.routes.{name}").router
    return [route.path for route in router.routes]


def test_every_route_module_is_in_the_table() -> None:
    modules = {m.name for m in pkgutil.iter_modules(threadgate.api.routes.__path__)}
    assert modules == set(ROUTE_MODULES)


@pytest.mark.parametrize("name", sorted(ROUTE_MODULES))
def test_each_route_is_loaded_for_its_own_paths(name: str) -> None:
    for path in _route_paths(name):
        # A concrete path this route matches: every parameter filled in.
        concrete = "/".join("x1" if part.startswith("{") else part for part in path.split("/"))
        assert name in route_modules_for(concrete), f"{path} ({name}) would not be loaded"


def test_no_two_modules_serve_the_same_method_and_path() -> None:
    """Modules are included in the order requests need them, not table order: that is the same
    app only while no request could match routes of two modules (the first included would win)."""
    routes = [(name, route) for name in ROUTE_MODULES
              for route in importlib.import_module(f"threadgate.api.routes.{name}").router.routes]
    for name, route in routes:
        concrete = "/".join("x1" if part.startswith("{") else part for part in route.path.split("/"))
        for method in route.methods:
            scope = {"type": "http", "method": method, "path": concrete, "root_path": ""}
            owners = {other for other, candidate in routes if candidate.matches(scope)[0] is Match.FULL}
            assert owners == {name}, f"{method} {route.path} is served by {sorted(owners)}"


@pytest.fixture
def fresh_app(tmp_path: Path) -> Any:
    runtime = build(make_settings(tmp_path))
    yield create_app(runtime)
    runtime.stores.close()


CHECK_IMPORTS = """
import sys
from fastapi.testclient import TestClient
from starlette.routing import Match
from threadgate.api.app import create_app
from threadgate.runtime import build
from tests.conftest import make_settings

def loaded():
    return {n.rsplit(".", 1)[1] for n in sys.modules if n.startswith("threadgate.api.routes.")}

runtime = build(make_settings(sys.argv[1]))
app = create_app(runtime)
assert not loaded(), loaded()
with TestClient(app) as client:
    assert client.get("/health").status_code == 200
    assert not loaded(), loaded()
    assert client.get("/v1/keys").status_code == 401
    assert "keys" in loaded() and not loaded() & {"console", "jobs", "chat", "tools"}, loaded()
runtime.stores.close()
"""


def test_creating_the_app_imports_no_route_module(tmp_path: Path) -> None:
    """In a fresh interpreter (the way a Lambda cold start imports the app)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, str(tmp_path)], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_lazily_loaded_app_answers_405_and_404_like_a_full_one(fresh_app: Any, tmp_path: Path) -> None:
    full = create_app(fresh_app.state.runtime)
    full.include_route_modules()
    with TestClient(fresh_app) as lazy_client, TestClient(full) as full_client:
        for method, path in [("PUT", "/v1/threads/thr_x/messages"), ("DELETE", "/v1/threads/thr_x/search"),
                             ("POST", "/v1/models"), ("GET", "/v1/nothing"), ("GET", "/v1/threads/a/b/c")]:
            lazy, ref = lazy_client.request(method, path), full_client.request(method, path)
            assert (lazy.status_code, lazy.headers.get("allow")) == (ref.status_code, ref.headers.get("allow")), path
            assert lazy.json()["error"] == ref.json()["error"]


def test_the_openapi_document_lists_every_route_on_a_fresh_app(fresh_app: Any) -> None:
    with TestClient(fresh_app) as client:
        paths = client.get("/openapi.json").json()["paths"]
    for name in ROUTE_MODULES:
        for path in _route_paths(name):
            assert path in paths or name == "console", path
