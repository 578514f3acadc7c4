"""The daemon's loop: reconcile → enforce limits → schedule → dispatch."""
from ds01q.controller.loop import Controller

__all__ = ["Controller"]
