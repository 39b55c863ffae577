"""The VERSATIL ML metadata service: a gRPC contract over PostgreSQL, in layers.

Each layer is a folder whose ``__init__`` says what it owns and what it may
import. Imports only point down this list (``make lint`` checks it with
import-linter, the ``[tool.importlinter]`` contract in ``pyproject.toml``):

    __main__, app, migrate, backup, seed, tokens, encryption   entry points: compose, serve, CLIs
    rpc          the one path of every call: decode, auth, run, status, epilogue
    domain | ops the 13 declarations and their rules | database, logs, metrics, tracing, health
    stats | methods   Get<R>Stats | the standard methods, reads, writes, request ids
    query        filters, ordering, page tokens
    config       Settings, read once from the environment
    core         the generic kinds: Resource, Catalog, codecs, errors, limits, principal

``models`` (the Peewee models, outside this package) may be imported by any layer.
"""
