"""Built-in plugins, one folder each (the import package ``harness_plugins``).

Each is loaded through the ``harness`` entry-point group declared in this
project's ``pyproject.toml``, exactly like a third-party plugin.
"""
