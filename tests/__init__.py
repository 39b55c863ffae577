"""The tests as a package: each module is imported once, as ``tests.<name>``, and shares ``tests.support``."""
