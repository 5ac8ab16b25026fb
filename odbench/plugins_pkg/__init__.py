"""Installed as ``odbench_plugins``: the parent of the bundled plugin folders.

The folders themselves (``methods/``, ``datasets/`` at the repository root)
have no ``__init__.py``; the registry loads their files by path.
"""
