"""The scheduling loop: turns queued jobs into placements and follows them to the end."""
