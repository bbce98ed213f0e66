"""mlwarden.detectors."""
