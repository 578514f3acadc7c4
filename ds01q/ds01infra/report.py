"""What an import of ds01-infra files did: the report behind ``render``'s header and the CLI.

``Report`` collects, while ``translate`` runs, which keys mapped to what, which were ignored
and why, the notes and the side files read; ``Report.result`` freezes it into a ``Conversion``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Conversion", "Report"]


@dataclass(frozen=True)
class Conversion:
    """The ds01q config mapping plus what the import did, for the header and the CLI."""

    config: dict[str, Any]
    mapped: tuple[str, ...]
    ignored: tuple[str, ...]
    notes: tuple[str, ...]
    sources: tuple[str, ...]


class Report:
    def __init__(self) -> None:
        self._mapped: dict[tuple[str, str], list[str]] = {}
        self._ignored: dict[tuple[str, str], list[str]] = {}
        self.notes: list[str] = []
        self.sources: list[str] = []

    def mapped(self, key: str, target: str, where: str) -> None:
        self._mapped.setdefault((key, target), []).append(where)

    def ignored(self, key: str, reason: str, where: str) -> None:
        self._ignored.setdefault((key, reason), []).append(where)

    @staticmethod
    def _lines(entries: dict[tuple[str, str], list[str]], sep: str) -> tuple[str, ...]:
        return tuple(f"{k}{sep}{v}  [{', '.join(dict.fromkeys(w))}]" for (k, v), w in entries.items())

    def result(self, config: dict[str, Any]) -> Conversion:
        return Conversion(config=config, mapped=self._lines(self._mapped, " -> "),
                          ignored=self._lines(self._ignored, ": "), notes=tuple(dict.fromkeys(self.notes)),
                          sources=tuple(self.sources))
