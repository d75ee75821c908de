"""The stack's building blocks: data, search, functions, api, observability."""
