"""`appliance bench glossary`: is each glossary term kept or forced in the sentences that contain it?

For every entry, sentences are generated from templates in the entry's source language with the term in
different positions; each is translated by the real model with placeholder enforcement and, for comparison,
without it. A sentence passes when its translation shows the term (do-not-translate, exact spelling) or the
forced translation (any case). Target: >= 95 % for every entry.
"""

from __future__ import annotations

from pathlib import Path

from appliance.glossary import Entry, Glossary, GlossaryStore
from appliance.translate.enforce import GlossaryTranslator

TARGET_PCT = 95.0
TEMPLATES = {
    "en": ["{} will present the report tomorrow.", "We discussed the proposal with {} this morning.",
           "The budget of {} was approved by the committee.", "I spoke to {} yesterday about the new plan.",
           "Thanks to {}, the project finished on time.", "Does anyone know where {} is?",
           "The next item on the agenda is {}.", "Please send your questions about {} to the secretary.",
           "Yesterday {} announced a new programme for schools.", "We will meet {} again next week in Lisbon.",
           "According to {}, the situation has improved.", "Can you tell us more about {}?",
           "The delegation thanked {} for the warm welcome.", "I think {} should lead the working group.",
           "Everyone agreed that {} did an excellent job.", "The report prepared by {} is on the table.",
           "Before we vote, {} would like to say a few words.", "There is a question for {} from the floor.",
           "Last year {} opened three new offices.", "The minutes mention {} twice."],
    "pt": ["{} vai apresentar o relatório amanhã.", "Discutimos a proposta com {} esta manhã.",
           "O orçamento de {} foi aprovado pela comissão.", "Falei ontem com {} sobre o novo plano.",
           "Graças a {}, o projeto terminou a tempo.", "Alguém sabe onde está {}?",
           "O próximo ponto da ordem do dia é {}.", "Enviem as vossas perguntas sobre {} ao secretário.",
           "Ontem {} anunciou um novo programa para as escolas.", "Vamos encontrar {} outra vez na próxima semana.",
           "Segundo {}, a situação melhorou.", "Pode dizer-nos mais sobre {}?",
           "A delegação agradeceu a {} a calorosa receção.", "Acho que {} deve liderar o grupo de trabalho.",
           "Todos concordaram que {} fez um excelente trabalho.", "O relatório preparado por {} está em cima da mesa.",
           "Antes de votarmos, {} gostaria de dizer algumas palavras.", "Há uma pergunta da sala para {}.",
           "No ano passado {} abriu três novos escritórios.", "A ata menciona {} duas vezes."],
}
SAMPLE = (  # a meeting-room glossary: names and acronyms kept, institutional terms forced
    Entry("en", "pt", "UNICEF"), Entry("en", "pt", "Frigate"), Entry("en", "pt", "Bergamot Project"),
    Entry("en", "pt", "Maria Silva"), Entry("en", "pt", "the board", "o conselho de administração"),
    Entry("en", "pt", "working group", "grupo de trabalho"),
    Entry("pt", "en", "Assembleia da República"), Entry("pt", "en", "João Pereira"),
    Entry("pt", "en", "o deputado", "the member of parliament"), Entry("pt", "en", "a câmara municipal", "the city council"),
)


def sentences(entry: Entry) -> list[str]:
    return [t.format(entry.term) for t in TEMPLATES.get(entry.source, [])]


def passes(entry: Entry, translation: str) -> bool:
    return entry.term in translation if entry.keep else entry.translation.casefold() in translation.casefold()


def run(models_dir: Path, glossary_file: Path | None = None, progress=lambda message: None) -> list[dict]:
    from appliance.engines import mt_pairs
    from appliance.translate import Translator

    entries = GlossaryStore(glossary_file).current().entries if glossary_file else ()
    glossary = Glossary(tuple(entries) or SAMPLE)
    pairs = mt_pairs(models_dir)
    translators = {}
    rows = []
    for e in glossary.entries:
        pair = (e.source, e.target)
        if pair not in pairs or e.source not in TEMPLATES:
            rows.append({"pair": f"{e.source}->{e.target}", "term": e.term, "rule": "keep" if e.keep else e.translation,
                         "sentences": 0, "placeholders_pct": None, "baseline_pct": None, "ok": False})
            continue
        if pair not in translators:
            progress(f"glossary: loading {pairs[pair].name}")
            translators[pair] = Translator.load(models_dir / pairs[pair].name)
        plain = translators[pair]
        enforced = GlossaryTranslator(plain, e.source, e.target, lambda: Glossary((e,)))
        texts = sentences(e)
        with_pct = 100 * sum(passes(e, t) for t in enforced.translate(texts)) / len(texts)
        base_pct = 100 * sum(passes(e, t) for t in plain.translate(texts)) / len(texts)
        rows.append({"pair": f"{e.source}->{e.target}", "term": e.term, "rule": "keep" if e.keep else e.translation,
                     "sentences": len(texts), "placeholders_pct": round(with_pct, 1), "baseline_pct": round(base_pct, 1),
                     "ok": with_pct >= TARGET_PCT})
        progress(f"glossary: {e.term!r}: {with_pct:.0f} % (without placeholders {base_pct:.0f} %)")
    return rows
