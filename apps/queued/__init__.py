"""A task queue (Huey) between the request and SMTP, with retries."""
