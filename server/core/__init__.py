"""The generic kinds every other layer works with; no resource is named here.

Owns ``Resource``, ``Relation``, ``Catalog`` and ``Method`` (``resource``), the
conversion between columns and protobuf fields (``codec``, ``kinds``), the
errors and their gRPC statuses (``errors``), the size ``Limits``, the caller of
an RPC (``principal``), the ``Rule`` interface (``rules``) and statements
compiled once (``prepared``). Imports only ``models`` and libraries.
"""
