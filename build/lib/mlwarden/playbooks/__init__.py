"""mlwarden.playbooks."""
