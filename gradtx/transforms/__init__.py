"""Primitives, one module per role; all are re-exported by :mod:`gradtx`."""
