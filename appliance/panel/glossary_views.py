"""The panel's glossary page: terms per language pair, kept as written or forced to a translation.

Entries are validated by appliance.glossary (empty terms, duplicates, pairs without a translation model are
refused with a message) and written atomically to glossary.json in the state folder; the running
pipeline re-reads the file when it changes.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from appliance.engines import mt_pairs
from appliance.glossary import GlossaryError, GlossaryStore, store_for
from appliance.panel.context import context
from appliance.panel.pages import PanelBlueprint
from appliance.panel.saving import load_current

bp = PanelBlueprint("glossary", __name__)


def _store() -> GlossaryStore:
    ctx = context()
    if ctx.state_dir is not None:
        return store_for(ctx.state_dir)
    return store_for(load_current(ctx).state_dir)


def _pairs() -> list[tuple[str, str]]:
    return sorted(mt_pairs(context().models_dir))


def _render(store: GlossaryStore, error: str = "", form: dict | None = None, code: int = 200):
    entries = store.current().entries
    return render_template("glossary.html", entries=entries, pairs=_pairs(), error=error,
                           error_prefix="Not saved.", form=form or {}, path=str(store.path)), code


@bp.page("/glossary", "Glossary")
def page():
    return _render(_store())


def _save(store: GlossaryStore, entries: list[dict], form: dict | None = None):
    try:
        store.save(entries, _pairs())
    except (GlossaryError, OSError) as exc:
        return _render(store, str(exc), form, 400)
    flash("Glossary saved.", "ok")
    return redirect(url_for("glossary.page"), code=303)


@bp.route("/glossary/add", methods=["POST"])
def add():
    store = _store()
    source, _, target = (request.form.get("pair") or "").partition("->")
    new = {"source": source, "target": target, "term": request.form.get("term", ""),
           "translation": request.form.get("translation", "") if request.form.get("rule") == "force" else ""}
    if request.form.get("rule") == "force" and not new["translation"].strip():
        return _render(store, "a forced translation needs the translation text", dict(request.form), 400)
    return _save(store, [e.to_dict() for e in store.current().entries] + [new], dict(request.form))


@bp.route("/glossary/<int:index>/delete", methods=["POST"])
def delete(index: int):
    store = _store()
    entries = [e.to_dict() for e in store.current().entries]
    if not 0 <= index < len(entries):
        return _render(store, f"there is no entry {index + 1}; the glossary has {len(entries)}", code=404)
    del entries[index]
    return _save(store, entries)
