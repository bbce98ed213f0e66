"""mlwarden.responders."""
