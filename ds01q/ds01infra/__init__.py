"""Importer for the lab's ds01-infra configuration (``ds01q import ds01-infra``)."""
from ds01q.ds01infra.importer import convert, render, translate

__all__ = ["convert", "render", "translate"]
