"""Argument types the two command lines (`iqa-factory` generate's and train's) share."""

import argparse
from collections.abc import Callable


def integer_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `low`, refused with the text given."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse
