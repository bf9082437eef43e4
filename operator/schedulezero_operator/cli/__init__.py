"""``kubectl schedulezero`` (alias ``kubectl sz``): everyday verbs for Schedules and Handlers.

Why a plugin: the resources are plain custom resources, so ``kubectl get``,
``annotate`` and ``patch`` already work, but the common questions ("run it now and
tell me how it went", "when does it fire next", "what does this cron mean") need
the operator's own logic: the run id of a run-now, the trigger math and its DST
rules. The plugin imports that logic instead of re-implementing it, so what it
prints is what the operator does.

Layout: ``plugin`` (argument parsing and the verbs), ``kube`` (the few API calls,
through the ``kubernetes`` client), ``render`` (tables and durations, pure) and
``explain`` (cron in words and upcoming fire times, pure).
"""

from .plugin import main

__all__ = ["main"]
