"""How a message names many things: the first few, and "..." where there are more."""

from collections.abc import Sequence


def a_few(items: Sequence[str], separator: str = ", ", shown: int = 3) -> str:
    """The first `shown` of `items` joined by `separator`, then the separator and "..." where
    there are more."""
    more = f"{separator}..." if len(items) > shown else ""
    return separator.join(items[:shown]) + more
