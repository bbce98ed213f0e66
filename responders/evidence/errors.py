"""The evidence package's errors, placed in mlwarden's one exception tree.

    MlwardenError
    ├── EvidenceQueryError      a search string that cannot run; says where and what to write
    └── ResponderError
        └── EvidenceStoreError  a store refused or could not be reached; `retryable` says which

`EvidenceStoreError(retryable=True)` means "the backend is away" (connection refused, timeout,
429/5xx): the spooling store catches exactly these and spools instead of failing.
"""

from __future__ import annotations

from mlwarden.schemas.errors import MlwardenError, ResponderError


class EvidenceQueryError(MlwardenError):
    """A search query that cannot run: bad syntax, an unknown field, unsupported syntax."""


class EvidenceStoreError(ResponderError):
    """The evidence store failed; `retryable=True` when it is unreachable or overloaded."""
