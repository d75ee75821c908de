"""The HTTP layer: FastAPI app, one router per resource, auth, SSE, error envelope."""
