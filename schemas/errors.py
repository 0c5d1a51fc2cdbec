"""The one error type for input that breaks a contract."""

from __future__ import annotations


class ContractError(ValueError):
    """Input that breaks a contract: `what` is wrong, `where` it was found (topic/partition/offset, header, field)."""

    def __init__(self, what: str, where: str = "") -> None:
        self.what = what
        self.where = where
        super().__init__(f"{where}: {what}" if where else what)
