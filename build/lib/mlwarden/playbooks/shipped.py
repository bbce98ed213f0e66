"""The playbook library shipped inside the package (`playbooks/library/*.yaml`).

It is package data, so it is found next to this module both from a checkout (editable install)
and from an installed wheel; `load_playbooks(library_dir())` loads it.
"""

from __future__ import annotations

from pathlib import Path


def library_dir() -> Path:
    """The directory holding the shipped YAML playbooks."""
    return Path(__file__).resolve().parent / "library"
