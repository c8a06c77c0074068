"""The flow every variant shares: app factory, models, tokens, views, composition, delivery."""

from apps.core.app import create_app
from apps.core.mailer import (
    DeliveryError,
    Email,
    Mailer,
    PermanentDeliveryError,
    TransientDeliveryError,
)

__all__ = [
    "DeliveryError",
    "Email",
    "Mailer",
    "PermanentDeliveryError",
    "TransientDeliveryError",
    "create_app",
]
