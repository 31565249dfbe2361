"""Digests of every file in a model directory: recorded at save, checked before anything loads."""

from __future__ import annotations
