"""Hearth's federated coordinator (a Flower app)."""
