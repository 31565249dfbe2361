"""Flavors: one module per ML library (``pyfunc``, ``sklearn``, ``spark``, ``onnx``), each with
``save_model``, ``load_model`` and ``load_pyfunc``.

Third-party flavors follow the same contract and register under the ``modelfmt.flavors`` entry-point
group; :mod:`modelfmt.flavors.save` documents the contract and holds the public save helper
(``finish_model``, ``atomic_model_dir``).
"""
