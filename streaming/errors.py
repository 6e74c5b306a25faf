"""Re-export: the user-input error lives in model/errors.py (model/ imports nothing from streaming/)."""

from model.errors import InputError, quoted

__all__ = ["InputError", "quoted"]
