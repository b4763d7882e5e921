"""Ingest: the only door into the system. Reads SSI (live, simulated or recorded), normalizes every frame and
publishes typed messages to the MARKET stream."""
