"""Seeded synthetic data for demos and tests."""
