"""Gateway: REST snapshots and history, WebSocket streams, all from the trackers' KV state."""
