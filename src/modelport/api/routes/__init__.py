"""Route groups; each module exposes ``routes(services) -> list[BaseRoute]``."""
