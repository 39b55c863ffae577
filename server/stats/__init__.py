"""``Get<R>Stats`` for every resource: checked plans, one GROUP BY query, the hourly rollup.

Owns the plan of a stats request (``plan``), its compilation and answer
(``query``) and the prediction rollup source (``rollup``). May import
``server.query`` and ``server.core``; not ``server.methods``, its sibling.
"""
