"""Classifier: active buy / active sell classification of every stock trade, session stats and prices."""
