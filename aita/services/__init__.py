"""Import paths from the users' guide, kept as re-exports; the code lives in ``aita.engine``."""
