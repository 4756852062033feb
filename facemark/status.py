"""What became of an artifact or a validation row, as one vocabulary.

A status is stored in JSON as a plain string (manifest.json's artifact `status`, validation.json's
row `status`): the word itself, or the word, a colon and why ("failed: timed out after 600 s").
Code never reads the string by prefix; it reads `Status.of(text)` and compares members.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Manifest artifacts: VERIFIED (written and checked against PyTorch), WRITTEN (written, its
    runtime is not on this host: Core ML off macOS), FAILED. Validation rows: OK (measured),
    NOT_RUN (its runtime is not on this host), NOT_EXPORTED (the manifest lists it without a file),
    REFUSED (sha256 mismatch, file missing), FAILED (the runtime crashed or could not load it)."""

    VERIFIED = "verified"
    WRITTEN = "written, not run on this host"
    OK = "ok"
    NOT_RUN = "not run"
    NOT_EXPORTED = "not exported"
    REFUSED = "refused"
    FAILED = "failed"

    @classmethod
    def of(cls, text: str) -> Status:
        """The member a stored status string is (`text` itself, or `text` before ': why')."""
        word = str(text).split(":", 1)[0]
        try:
            return cls(text if text in cls._value2member_map_ else word)
        except ValueError:
            raise ValueError(f"unknown status {text!r}; known: {', '.join(member.value for member in cls)}") from None

    def because(self, why: str) -> str:
        """The stored string of this status with its reason: 'failed: why'."""
        return f"{self.value}: {why}"
