"""What the command-line modules share: settings from the environment, or a clear exit."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from mlwarden.streams.settings import Settings

_err = Console(stderr=True)


def load_settings() -> Settings:
    """Settings from the environment, or a clear exit naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = "MLWARDEN_" + "__".join(str(part) for part in error["loc"]).upper()
            _err.print(f"[red]config error[/red] {name}: {error['msg']}")
        raise typer.Exit(2) from None
