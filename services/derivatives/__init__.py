"""Derivatives: VN30 index futures, their basis to the VN30 index, and their trades' aggressors."""
