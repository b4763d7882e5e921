"""Recorder: every classified trade, foreign flow, index point and basis point into PostgreSQL, exactly once."""
