"""What is particular to the ML platform: the 13 declarations and their rules.

Owns the catalog (``catalog``: one declaration per resource, with its rules,
secrets, search and custom methods and their roles), the lifecycles
(``lifecycle``), deployment traffic and rollbacks (``deployments``), vector
search (``search``), lineage (``lineage``), secrets at rest (``secrets``) and
the ``created_by`` stamp (``stamps``). Custom methods call the typed functions
of ``server.methods`` (never request protos of other RPCs). May import
``server.stats``, ``server.methods``, ``server.query``, ``server.config`` and
``server.core``; not ``server.ops``, its sibling.
"""
