"""How much one (query, item) may hold, wherever it enters: a logged row (the data stage
quarantines it as oversized) or a request item (the endpoint answers 422). One definition, read
by the data schema (``taosr.datasets.schema``), the config's ``data`` section and the Serve
validation, so a row the model was trained on is never refused at serving, or the reverse."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class InputLimits:
    max_query_chars: int = 512
    max_title_chars: int = 1024
    max_description_chars: int = 20000  # after HTML stripping
    max_attributes: int = 64
    max_attribute_chars: int = 512  # each attribute key and value, and the category

    @classmethod
    def from_config(cls, section) -> "InputLimits":
        """The limits a config section (``data``, or the Serve app's ``limits``) sets."""
        return cls(**{f.name: getattr(section, f.name) for f in fields(InputLimits)})
