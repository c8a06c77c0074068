"""The app factory: ``create_app(variant, config=None)``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_wtf.csrf import generate_csrf

from apps.core import config as configuration
from apps.core import db, delivery, metrics, responses
from apps.core.registry import create_mailer, mailer_class


def create_app(variant: str, config: dict[str, Any] | None = None) -> Flask:
    """Build the flow with the named email-sending variant.

    Configuration: :data:`apps.core.config.DEFAULTS`, then ``MAILLAB_*`` environment
    variables, then ``config``. Raises :class:`apps.core.config.ConfigError` for a bad value
    and :class:`apps.core.registry.UnknownVariantError` for an unknown variant.
    """
    mailer_class(variant)  # an unknown variant fails before anything is created on disk
    app = Flask(__name__, instance_path=configuration.instance_dir(config),
                instance_relative_config=True)
    configuration.load(app, config)
    logging.getLogger("apps").setLevel(logging.INFO)
    app.jinja_env.globals["csrf_token"] = generate_csrf
    db.init_app(app)
    delivery.init_app(app)
    responses.init_app(app)
    from apps.core.views import bp

    app.register_blueprint(bp)
    app.extensions["mailer"] = create_mailer(variant, app)
    app.extensions["maillab.metrics"] = metrics.registry_for(app.extensions["mailer"])
    app.config["VARIANT"] = variant
    return app
