"""`appliance bench`: the command that runs the benchmarks of this package and prints their tables (or JSON).

all = models + pipeline; accuracy, speakers, faults, archive and glossary run only when named.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _models_dir(args) -> Path:
    from appliance.modelstore.paths import models_dir

    return models_dir(args.models_dir)


def _load_config(args):
    from appliance import config

    return config.load(args.config) if args.config else config.Config()


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _bench_faults(args) -> int:
    from appliance.bench import faults, report

    names = tuple(n for n in args.faults.split(",") if n) if args.faults else faults.FAULTS
    results = faults.run(_models_dir(args), names, outage_s=args.outage_s, progress=_progress)
    if args.json:
        print(report.to_json({"faults": [r.__dict__ for r in results]}))
    else:
        print("\nfaults (real daemon, broker and models; one fault per run)\n")
        print(report.table([r.row() for r in results], faults.COLUMNS))
    return 0 if all(r.finals_lost == 0 and r.recover_s is not None for r in results) else 1


def cmd_bench(args) -> int:
    from appliance.bench import report

    if args.part in OWN_BENCHES:
        return OWN_BENCHES[args.part](args)
    if args.part == "faults":
        return _bench_faults(args)
    cfg = _load_config(args)
    if args.model:
        cfg.asr.model = args.model
    if args.config is None:  # the benchmark's default room: auto source, both translation directions loaded
        cfg.languages.targets = ["en", "pt"]
    if args.part == "speakers":
        return _bench_speakers(args, cfg)
    result: dict = {}
    if args.part in ("all", "models"):
        from appliance.bench import model_bench, provider_bench

        result["models"] = provider_bench.run(_models_dir(args), args.providers.split(","), asr_model=cfg.asr.model,
                                              quick=args.quick, progress=_progress) if args.providers else \
            model_bench.run(_models_dir(args), quick=args.quick, progress=_progress)
    if args.part in ("all", "pipeline"):
        from appliance.bench import pipeline_bench

        result["pipeline"] = pipeline_bench.run(cfg, _models_dir(args), quick=args.quick, progress=_progress)
    if args.part == "accuracy":
        return _bench_accuracy(cfg, args)
    if args.json:
        flat = dict(result.get("pipeline", {}))
        if "models" in result:
            flat["model_bench"] = result["models"]
        print(report.to_json(flat))
        return 0
    if "models" in result:
        for title, rows in result["models"].items():
            print(f"\n{title}\n\n{report.table(rows)}")
    if "pipeline" in result:
        print("\n" + report.key_values(result["pipeline"], "pipeline (simulated real time)"))
    return 0


def _bench_speakers(args, cfg) -> int:
    from appliance.bench import report, speakers_bench

    result = speakers_bench.run(_models_dir(args), quick=args.quick, threshold=cfg.speakers.threshold,
                                 progress=_progress)
    if args.json:
        print(report.to_json(result))
        return 0
    print("\nspeaker turns, per meeting\n\n" + report.table(result["meetings"]))
    print("\n" + report.key_values({k: v for k, v in result.items() if k != "meetings"}, "speaker turns"))
    return 0


def _bench_archive(args) -> int:
    from appliance.bench import archive_bench, report

    result = archive_bench.run(progress=_progress)
    if args.json:
        print(report.to_json(result))
    else:
        archive_bench.print_report(result)
    return 0


def _bench_glossary(args) -> int:
    from appliance.bench import glossary_bench, report
    from appliance.glossary import store_for

    cfg = _load_config(args)
    configured = store_for(cfg.state_dir).path if args.config else None  # default: the built-in sample glossary
    rows = glossary_bench.run(_models_dir(args), configured, progress=_progress)
    title = f"glossary: term kept or forced (target >= {glossary_bench.TARGET_PCT:.0f} % per entry)"
    print(report.to_json({"glossary": rows}) if args.json else f"{title}\n\n{report.table(rows)}")
    return 0 if rows and all(r["ok"] for r in rows) else 1


def _bench_accuracy(cfg, args) -> int:
    from appliance.bench import accuracy_bench, report

    if args.config is None:  # the benchmark's room: the languages its audio is in
        cfg.languages.spoken = list(accuracy_bench.BENCH_LANGUAGES)
    if args.levers:
        rows = accuracy_bench.run_levers(cfg, _models_dir(args), progress=_progress)
        print(report.to_json({"levers": rows}) if args.json else
              "\naccuracy levers (English part)\n\n" + report.table(rows))
        return 0
    result = accuracy_bench.run(cfg, _models_dir(args), quick=args.quick, progress=_progress)
    print(report.to_json(result) if args.json else "\n" + report.key_values(result, "accuracy (simulated real time)"))
    return 0


OWN_BENCHES = {"archive": _bench_archive, "glossary": _bench_glossary}  # parts whose module prints its own report


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure speed, memory and accuracy (tables; --json for machines)")
    p.add_argument("part", nargs="?", choices=["all", "models", "pipeline", "accuracy", "speakers", "faults",
                                                *OWN_BENCHES], default="all",
                   help="all = models + pipeline; accuracy: long-form streaming vs offline (a few minutes); "
                        "speakers: speaker turns on multi-speaker meetings; faults: the daemon through each fault "
                        "(minutes) ('accuracy', 'speakers', 'faults', 'archive' and 'glossary' are not part of 'all')")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--levers", action="store_true", help="accuracy: WER of each accuracy lever on its own (3 seeds)")
    p.add_argument("--quick", action="store_true", help="a few clips only (smoke run)")
    p.add_argument("--model", default=None, help="speech model (default whisper-base)")
    p.add_argument("--providers", default=None, help="models part: side by side on these execution providers "
                   "(openvino,cpu), from a venv whose onnxruntime offers them (scripts/flavour-venv openvino)")
    p.add_argument("--config", default=None, help="config file for the pipeline part")
    p.add_argument("--faults", default=None, help="faults part: comma-separated subset (default: all of them)")
    p.add_argument("--outage-s", type=float, default=30.0, help="faults part: seconds the broker stays away")
    p.set_defaults(func=cmd_bench)
