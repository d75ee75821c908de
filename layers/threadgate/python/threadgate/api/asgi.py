"""Module-level ASGI app for uvicorn (`uvicorn threadgate.api.asgi:app`, also under LWA)."""

from threadgate.api.app import create_app

app = create_app()
