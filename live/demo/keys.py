"""Key names of the demo in the datastore."""

from __future__ import annotations

SEEDED = "nr:demo:seeded"
