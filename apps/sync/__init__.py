"""The seeds' slow pattern: deliver inside the request."""
