"""Foreign: foreign investors' flows per symbol, their speed and acceleration, and the VN30 summary."""
