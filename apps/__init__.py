"""The registration and email-verification flow and its email-sending variants."""
