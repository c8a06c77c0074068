"""The seeds' fast pattern: one thread per email."""
