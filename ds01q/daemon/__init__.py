"""``ds01q server``: the composition root (build.py), the socket server, the metrics
exporter and the terminal relay. Nothing below it imports it."""
