"""What the panel's HTML pages share: `PanelBlueprint` (a page declares its navigation entry where it is routed) and
the settings-page flow (a config section's fields shown as a form; a POST validated and saved through saving.save).
"""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, Flask, flash, redirect, render_template, request

from appliance.config import Config, ConfigError
from appliance.panel.context import context
from appliance.panel.fields import get_path, parse, set_path, spec
from appliance.panel.saving import load_current, save

__all__ = ["PanelBlueprint", "navigation", "section", "current", "specs", "settings_page"]


class PanelBlueprint(Blueprint):
    """A blueprint whose pages name themselves for the navigation bar: `@bp.page("/live", "Live")`."""

    def __init__(self, name: str, import_name: str):
        super().__init__(name, import_name)
        self.nav: list[tuple[str, str]] = []  # (endpoint, title), in the order the pages are declared

    def page(self, rule: str, title: str, **options):
        """Route `rule` like `route`, and list the view in the navigation as `title`."""
        def register(view: Callable) -> Callable:
            endpoint = options.setdefault("endpoint", view.__name__)
            self.nav.append((f"{self.name}.{endpoint}", title))
            return self.route(rule, **options)(view)

        return register


def navigation(app: Flask) -> list[tuple[str, str]]:
    """The navigation bar as (endpoint, title): each PanelBlueprint's pages, in the order `app` registered them."""
    return [entry for bp in app.blueprints.values() if isinstance(bp, PanelBlueprint) for entry in bp.nav]


def section(name: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Every field of a config section, so fields added to config.py appear on their page without edits here."""
    return [f"{name}.{f}" for f in Config.model_fields[name].annotation.model_fields if f not in skip]


def current() -> tuple[dict, str]:
    """(config data, load error); defaults are shown (read only) when the file does not validate."""
    try:
        return load_current(context()).model_dump(mode="json"), ""
    except ConfigError as exc:
        return Config().model_dump(mode="json"), str(exc)


def specs(keys: list[str], data: dict) -> list:
    """The form fields of `keys`, with their values in `data`."""
    return [spec(k, get_path(data, k)) for k in keys]


def settings_page(template: str, keys: list[str], custom: Callable[[Any, dict], None] | None,
                  extra: Callable[[dict], dict]):
    """GET renders the page; POST applies the generic fields + `custom(form, data)`, validates, saves."""
    data, load_error = current()
    error, status = "", 200
    if request.method == "POST":
        form = request.form

        def build(data_now: dict) -> dict:
            for k in keys:
                set_path(data_now, k, parse(spec(k), form))
            if custom:
                custom(form, data_now)
            return data_now

        result = save(context(), build)
        if result.ok:
            flash("Saved." if result.changed else "Nothing changed.", "ok")
            return redirect(request.path, code=303)
        error, status = result.error, 400
        data = result.attempted or data
    return render_template(template, data=data, specs={s.key: s for s in specs(keys, data)}, error=error,
                           error_prefix="Not saved.", load_error=load_error, **extra(data)), status
