"""The standard methods (AIP-131..135, 231, 233), written once for every resource.

Owns the RPC-shaped handlers (``standard``), the typed reads and writes the
domain calls too (``reads``, ``writes``: ``update(resource, id, changes)``),
request ids (``idempotency``) and how rows become messages (``shaping``).
May import ``server.query`` and ``server.core``.
"""
