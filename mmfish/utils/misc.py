"""Small helpers shared by the package's messages."""

from typing import Iterable


def listing(items: Iterable[object], limit: int, noun: str = '') -> str:
    """How many ``items`` there are and the first ``limit`` of them, for an error message.

    ``listing(['a', 'b', 'c'], 2)`` is ``'3 (a, b, and 1 more)'``; with ``noun='key'``,
    ``'3 keys (a, b, and 1 more)'``.

    Args:
        items: The items (keys, file names), in the order to show them.
        limit: How many to show.
        noun: What they are, named after the count (made plural when the count is not 1).
    """
    items = [str(item) for item in items]
    shown = ', '.join(items[:limit])
    more = f', and {len(items) - limit} more' if len(items) > limit else ''
    what = f' {noun}{"" if len(items) == 1 else "s"}' if noun else ''
    return f'{len(items)}{what} ({shown}{more})'


__all__ = ['listing']
