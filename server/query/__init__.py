"""The query language of List, Stats and Search: filters, ordering and page tokens.

Owns the AIP-160 filter compiler (``filters``), ``order_by`` parsing and keyset
conditions (``ordering``) and signed page tokens (``page_tokens``), all typed
by the ``Resource`` they read. May import ``server.core``.
"""
