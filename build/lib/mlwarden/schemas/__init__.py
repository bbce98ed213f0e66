"""mlwarden.schemas."""
