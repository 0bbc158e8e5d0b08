"""Training hooks."""

__all__: list = []
