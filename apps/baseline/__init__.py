"""The floor: a Mailer that records each email and sends nothing."""
