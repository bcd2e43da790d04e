"""Sovereign: privacy-preserving federated forecasting for dealer networks."""
