"""The meeting record as a service: every final, in every language, written by meeting to the archive under the
state folder (a bounded queue and a writer thread of its own, so recording never slows the captions).

An unusable state folder costs the record, never the captions: the archive is then off, with a warning.
"""

from __future__ import annotations

import logging

from appliance.services.base import Check, Context, Service

log = logging.getLogger(__name__)


class ArchiveService(Service):
    name = "archive"
    sections = ("archive", "state_dir")

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.writer = None  # appliance.archive.Archive while meetings are recorded

    def start(self) -> None:
        cfg = self.ctx.cfg
        if not cfg.archive.enabled:
            return
        from appliance.archive import Archive, db_path

        try:
            self.writer = Archive(db_path(cfg.state_dir), gap_s=cfg.archive.gap_min * 60,
                                  retention_days=cfg.archive.retention_days, on_warning=self.ctx.status.warn,
                                  on_meeting_start=self.ctx.meeting_code.rotate).start()
        except Exception as exc:
            log.error("archive off: %s", exc)
            self.ctx.status.warn(f"archive off: {exc}")

    def stop(self, timeout: float) -> None:
        """Writes the finals still queued, then closes the file."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.stop(timeout)

    def problem(self) -> str | None:
        writer = self.writer
        return writer.problem() if writer is not None else None

    def checks(self) -> list[Check]:
        """Non-critical: a record that is not kept never stops the captions (nor the watchdog's pings)."""
        return [Check(self.name, self.problem, critical=False)]

    def put(self, event) -> None:
        writer = self.writer
        if writer is not None:
            writer.put(event)
