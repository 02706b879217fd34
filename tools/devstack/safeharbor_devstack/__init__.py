"""Runs the SafeHarbor services as local processes (granian, through safeharbor_common.serving): `make run`
and the integration suite."""
from .stack import SERVICES, ServiceSpec, Stack, StackSettings, free_port

__all__ = ["SERVICES", "ServiceSpec", "Stack", "StackSettings", "free_port"]
