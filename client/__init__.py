"""Clients: the browser page (web/) and the Python client."""
