"""Record a forward pass and get the gradient of every intermediate by its variable name.

The recorder's public names, from where they live: :class:`record` (the tracer, in
:mod:`gradcheck_kit.recording.tracer`) and :class:`Recording` (the queries on what it
recorded, in :mod:`gradcheck_kit.recording.recording`).
"""

from __future__ import annotations

from gradcheck_kit.recording.recording import Recording
from gradcheck_kit.recording.tracer import record

__all__ = ["Recording", "record"]
