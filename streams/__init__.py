"""mlwarden.streams."""
