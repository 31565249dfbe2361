"""Flavors: one module per ML library, each with ``save_model``, ``load_model`` and ``_load_pyfunc``."""
