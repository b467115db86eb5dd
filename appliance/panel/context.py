"""The panel's shared state: `PanelContext`, made once by create_app and hung on the Flask app, and the request's
view of it (`context()`, `admin_session()`). Every blueprint takes what it needs from here, never from another one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from flask import Flask, current_app, session

from appliance.panel.apply import Applier
from appliance.panel.auth import AdminStore, RateLimiter, SessionTable, new_setup_code
from appliance.status import Status

__all__ = ["PanelContext", "context", "admin_session", "EXTENSION"]

log = logging.getLogger(__name__)

EXTENSION = "appliance_panel"  # the key of the PanelContext in app.extensions
LOGIN_LIMIT, LOGIN_WINDOW_S = 5, 60.0
SESSION_IDLE_S = 12 * 3600.0  # the cookie's sliding lifetime (PERMANENT_SESSION_LIFETIME)


class PanelContext:
    """Everything the pages need: the config file, the daemon's status and parts, the admin store, the applier."""

    def __init__(self, *, config_path: Path, status: Status, models_dir: Path, admin: AdminStore, applier: Applier,
                 device_lister: Callable[[], list] | None, health: Callable[[], tuple[bool, list[str]]],
                 metrics_public: bool):
        self.config_path = config_path
        self.status = status
        self.models_dir = models_dir
        self.admin = admin
        self.applier = applier
        self.device_lister = device_lister
        self.health = health
        self.metrics_public = metrics_public
        self.archive: Callable[[], Any] | None = None  # () -> the running appliance.archive.Archive, or None
        self.state_dir: Path | None = None  # the daemon's state folder (glossary.json)
        self.speakers: Callable[[], Any] | None = None  # () -> the room's SpeakerTracker, or None
        self.record: Callable[[float], Any] | None = None  # seconds -> audio from the room microphone
        self.login_limiter = RateLimiter(LOGIN_LIMIT, LOGIN_WINDOW_S)
        self.sessions = SessionTable(SESSION_IDLE_S)  # ids of sessions not logged out (the cookie carries one)
        self.setup_code: str | None = None  # the first-run page's one-time code (None once a password is set)
        self.tls_fingerprint: str | None = None  # SHA-256 of the panel's certificate, shown on its pages
        self.display_link: tuple[int, str] | None = None  # (display server port, page path + query) for links
        self.rotate_display_password: Callable[[], str] | None = None
        self.new_meeting_code: Callable[[], str] | None = None  # () -> a new meeting code (the old one refused)
        self.save_lock = threading.Lock()  # one load-modify-save at a time

    def ensure_setup_code(self) -> str:
        """The first-run code, made and logged once (at start, or when the admin file was deleted meanwhile)."""
        if self.setup_code is None:
            self.setup_code = new_setup_code()
            log.warning("first-run set-up code for the panel: %s (the set-up page asks for it)", self.setup_code)
        return self.setup_code


def context(app: Flask | None = None) -> PanelContext:
    """The PanelContext of `app`, or of the app serving the current request."""
    return (app or current_app).extensions[EXTENSION]


def admin_session() -> bool:
    """The request's session is the admin's, logged in under the current password (a change ends older sessions)
    and still listed server-side (logging out ends it, even for a copy of the cookie)."""
    try:
        ctx = context()
        return (session.get("user") == "admin" and session.get("epoch") == ctx.admin.epoch
                and ctx.sessions.valid(session.get("sid")))
    except ValueError:  # damaged admin file: nobody is logged in until it is fixed
        return False
