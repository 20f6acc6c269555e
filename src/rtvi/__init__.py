"""rtvi: real-time video intelligence services (RTVI v1 API)."""

__version__ = "0.1.0"
