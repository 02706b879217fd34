"""Blueprints, one per Stream resource, plus the test-only inspection routes."""

from __future__ import annotations

from flask import Flask

from . import app_settings, channel_types, channels, inspect, messages, users


def register_routes(app: Flask) -> None:
    for module in (app_settings, users, channel_types, channels, messages, inspect):
        app.register_blueprint(module.bp)
