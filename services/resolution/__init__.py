"""resolution: case management, refunds and compensation, the clocks."""
