"""Index: index values, breadth and intraday series."""
