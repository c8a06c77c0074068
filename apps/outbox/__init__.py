"""The transactional outbox variant."""
