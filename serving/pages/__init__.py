"""The model's pages' files (package data, no code): Jinja2 templates (``*.html``), their stylesheet and
scripts, read by :mod:`modelfmt.serving.protocols.pages`."""
