"""Runs the SafeHarbor services as local gunicorn processes: `make run` and the integration suite."""
from .stack import SERVICES, ServiceSpec, Stack, StackSettings, free_port

__all__ = ["SERVICES", "ServiceSpec", "Stack", "StackSettings", "free_port"]
