"""Generators behind one interface (model.base). Importing this package imports no torch."""
