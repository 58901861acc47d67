"""`callpulse` command line: embedded analysis, server processes and admin commands.

Machine-readable results go to stdout; progress and logs go to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from callpulse import __version__
from callpulse.cli_admin import add_admin_commands
from callpulse.settings import get_settings
from worker.pipeline.voice.names import BACKENDS


def _apply_model_overrides(args: argparse.Namespace) -> None:
    """Options win over CALLPULSE_* variables; exporting them also reaches worker child processes."""
    for option, env in (("backend", "MODEL_BACKEND"), ("model_path", "MODEL_PATH"), ("device", "DEVICE"),
                        ("database_url", "DATABASE_URL"), ("asr_model", "ASR_MODEL_PATH"),
                        ("asr_engine", "ASR_ENGINE")):
        value = getattr(args, option, None)
        if value:
            os.environ[f"CALLPULSE_{env}"] = str(value)
    if getattr(args, "no_asr", False):
        os.environ["CALLPULSE_ASR_ENABLED"] = "false"
    elif getattr(args, "asr_model", None):
        os.environ["CALLPULSE_ASR_ENABLED"] = "true"
    get_settings.cache_clear()


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, help="emotion backend (default: CALLPULSE_MODEL_BACKEND "
                   "or 'embedded'); audio-classifier, omni and r1-omni need the [gpu] extra and a "
                   "local checkpoint directory (--model-path); emotion2vec and sensevoice need the "
                   "downloaded FunASR release directory (--model-path)")
    p.add_argument("--model-path", help="local checkpoint directory for non-embedded backends")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CALLPULSE_DEVICE or cpu)")


def _csv(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]


def parse_roles(value: str) -> dict[int, str]:
    """`agent,customer` (roles in channel order) or the API's `0=agent,1=customer` form."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not any("=" in part for part in parts):
        return {i: part.lower() for i, part in enumerate(parts)}
    roles: dict[int, str] = {}
    for part in parts:
        channel, sep, role = part.partition("=")
        if not sep or not channel.strip().isdigit() or not role.strip():
            raise ValueError(f"'{part}' is not CHANNEL=ROLE; write 'agent,customer' or '0=agent,1=customer'")
        roles[int(channel)] = role.strip().lower()
    if sorted(roles) != list(range(len(roles))):
        raise ValueError(f"channels {sorted(roles)} leave a gap; name every channel from 0")
    return roles


def cmd_analyze(args: argparse.Namespace) -> int:
    from callpulse.local import analyze_files, format_table
    from worker.pipeline.speech.asr import AsrUnavailable

    _apply_model_overrides(args)
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"callpulse analyze: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        channel_roles = parse_roles(args.roles) if args.roles else {}
    except ValueError as exc:
        print(f"callpulse analyze: --roles: {exc}", file=sys.stderr)
        return 2
    transcripts: dict[Path, Path] = {}
    if args.transcript:
        if len(args.files) != 1:
            print("callpulse analyze: --transcript goes with exactly one FILE", file=sys.stderr)
            return 2
        transcripts[Path(args.files[0])] = Path(args.transcript)
    failures = 0
    try:
        for result in analyze_files([Path(f) for f in args.files], channel_roles, _csv(args.analyze_roles),
                                    get_settings(), show_progress=not args.quiet, transcripts=transcripts,
                                    emotion_prior=args.emotion_prior):
            failures += result.get("status") != "done"
            if args.format == "json":
                sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
            else:
                sys.stdout.write(format_table(result) + "\n")
            sys.stdout.flush()
    except AsrUnavailable as exc:
        print(f"callpulse analyze: speech recognition cannot run: {exc}\n(--no-asr analyzes without words)",
              file=sys.stderr)
        return 2
    return 1 if failures else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    _apply_model_overrides(args)
    url = get_settings().resolved_database_url
    if url.startswith("sqlite"):
        get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    print(f"database at revision head ({url.split('@')[-1]})", file=sys.stderr)
    return 0


def use_metrics_dir() -> str:
    """A fresh PROMETHEUS_MULTIPROC_DIR for this process tree (an operator's own is kept). It must
    be set before prometheus_client is imported, which decides then how samples are stored, so
    this module never imports callpulse.metrics itself."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        return folder
    folder = tempfile.mkdtemp(prefix="callpulse-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def cmd_api(args: argparse.Namespace) -> int:
    # Before the server starts its processes: /metrics then adds up every process's samples.
    use_metrics_dir()
    from api.http_server import serve

    serve(args.host, args.port, args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    _apply_model_overrides(args)
    # Before the pool forks: each pool process writes its samples where /metrics adds them up.
    use_metrics_dir()
    from worker.jobs.app import QUEUES, app

    queues = _csv(args.queues)
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        print(f"callpulse worker: unknown queue(s) {', '.join(unknown)}; known: {', '.join(QUEUES)}",
              file=sys.stderr)
        return 2
    argv = ["worker", "-Q", ",".join(queues), "--loglevel", args.loglevel, "-n", args.name]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.pool:
        argv += ["--pool", args.pool]
    if args.beat:
        # Beat keeps its schedule file in a writable data folder (the image's /app is read-only
        # to the service user, and beat dies if it cannot write it).
        data_dir = get_settings().data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", "--schedule", str(data_dir / "celerybeat-schedule")]
    app.worker_main(argv=argv)
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from worker.stages.retention import apply_retention

    counts = apply_retention(get_settings())
    print(json.dumps(dataclasses.asdict(counts)))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from worker.jobs.enqueue import enqueue
    from worker.stages import sweep

    followups = sweep.sweep(get_settings())
    enqueue(followups)
    print(json.dumps({"ingest": len(followups.ingest), "infer_batches": len(followups.infer_batches),
                      "transcribe": len(followups.transcribe), "completed": len(followups.completed)}))
    return 0


TRAIN_TENANT_HELP = """callpulse train: trains the embedded voice model (options below).
  --tenant NAME --out DIR [--base DIR]
                  adapt the embedded voice model to this tenant's supervisor corrections
                  (PUT /v1/segments/{id}/label, read from CALLPULSE_DATABASE_URL) and their calls'
                  media, with no public corpus: the same code as `callpulse adapt` (a residual head on
                  the shipped model, seconds to minutes; docs/MODELS.md). Prints a held-out estimate
                  beside the base model's and writes DIR with a new model version: point workers at
                  it with CALLPULSE_MODEL_PATH, then POST /v1/recordings/{id}/rescore re-runs a call.
                  With --base an emotion2vec release directory, its head is adapted instead, on
                  the utterance embedding with the encoder frozen (use it with --backend emotion2vec).
  --tenant NAME --out DIR --ship-only --ravdess DIR --emodb DIR
                  maintainers: retrain the shipped recipe on the public corpora plus the corrections
                  (minutes; the corpora must be on disk).
"""


def _pop_option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """Take `--name VALUE` or `--name=VALUE` out of argv (the rest goes to the trainer as is)."""
    rest, value, it = [], None, iter(argv)
    for arg in it:
        if arg == name:
            value = next(it, None)
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return value, rest


def load_corrections(tenant_name: str) -> list[Any]:
    """The tenant's stored corrections as training examples (media, channel, span, label, speaker)."""
    from db.queries.corrections import tenant_corrections
    from db.queries.tenants import get_tenant_by_name
    from db.session import transaction

    with transaction() as s:
        tenant = get_tenant_by_name(s, tenant_name)
        if tenant is None:
            raise SystemExit(f"callpulse train: no tenant named '{tenant_name}'")
        return list(tenant_corrections(s, tenant.id))


def export_corrections(tenant_name: str, target: Path) -> int:
    """Write the tenant's corrections as training examples (JSON Lines); returns how many."""
    examples = load_corrections(tenant_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as out:
        for ex in examples:
            out.write(json.dumps(dataclasses.asdict(ex)) + "\n")
    return len(examples)


def cmd_train(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(TRAIN_TENANT_HELP)
    tenant, argv = _pop_option(argv, "--tenant")
    if tenant is not None and not any(a == "--out" or a.startswith("--out=") for a in argv):
        print("callpulse train: --tenant needs --out DIR (that tenant's model directory); the weights "
              "shipped with the package stay as they are", file=sys.stderr)
        return 2
    if tenant is not None and "--ship-only" not in argv and not ("-h" in argv or "--help" in argv):
        from callpulse.adapt_cli import cmd_train_tenant

        out, rest = _pop_option(argv, "--out")
        base, rest = _pop_option(rest, "--base")
        if rest:
            print(f"callpulse train: with --tenant and without --ship-only only --out and --base are "
                  f"taken (got {' '.join(rest)}); the public corpora are for --ship-only", file=sys.stderr)
            return 2
        return cmd_train_tenant(tenant, Path(str(out)), Path(base) if base else None)
    if tenant is not None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = get_settings().data_dir / "corrections" / f"{tenant}-{stamp}.jsonl"
        count = export_corrections(tenant, path)
        print(f"callpulse train: {count} corrections of tenant {tenant} → {path}", file=sys.stderr)
        argv = [*argv, "--corrections", str(path)]
    try:
        from training.voice import main as train_main
    except ImportError as exc:
        # scikit-learn fits the shipped model's heads; it is not part of the runtime install.
        print(f"callpulse train: training the shipped model needs the [train] extra "
              f"(pip install 'callpulse[train]'): {exc}", file=sys.stderr)
        return 2
    return train_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callpulse", description="Self-hosted emotion analytics for "
                                     "contact-center recordings.")
    parser.add_argument("--version", action="version", version=f"callpulse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="analyze recordings in-process (no servers; SQLite by default)",
                       description="Run the whole pipeline in this process on one or more files (the model "
                       "is loaded once) and print each timeline with its reasons. Results are stored in "
                       "CALLPULSE_DATABASE_URL, by default a SQLite file under CALLPULSE_DATA_DIR.")
    p.add_argument("files", nargs="+", metavar="FILE", help="wav, mp3, m4a/aac, ogg/opus, flac, mp4, webm")
    p.add_argument("--roles", help="speaker role per channel, in channel order, e.g. 'agent,customer' "
                   "for stereo calls, or by channel index as the API's channel_roles: '0=agent,1=customer'; "
                   "applied to files with that many channels, other files (and all files without "
                   "--roles) get role 'unknown'")
    p.add_argument("--analyze-roles", default="customer,unknown",
                   help="roles that get emotion inference (default: customer,unknown); others keep their "
                   "segments with the reason they were skipped")
    p.add_argument("--transcript", metavar="TRANSCRIPT",
                   help="the call's transcript from your own ASR (JSON or WebVTT, docs/TRANSCRIPTS.md), "
                   "for a single FILE: its words feed the text model and show in the output")
    p.add_argument("--asr-model", metavar="DIR",
                   help="another speech recognition model than the bundled Whisper-base: a "
                   "faster-whisper (CTranslate2) directory, or a transformers Whisper checkpoint "
                   "(docs/TRANSCRIPTS.md)")
    p.add_argument("--asr-engine", choices=("whisper", "sensevoice"),
                   help="speech recognition engine (default: CALLPULSE_ASR_ENGINE or whisper); sensevoice "
                   "reads the SenseVoice-Small release in --asr-model (or --model-path with --backend "
                   "sensevoice)")
    p.add_argument("--no-asr", action="store_true",
                   help="do not transcribe: by default every file without --transcript is transcribed "
                   "first (bundled Whisper-base, on CPU), so its words feed the text model and show "
                   "under each segment")
    p.add_argument("--emotion-prior", choices=("balanced", "calls"), default="balanced",
                   help="class prior: balanced (default, the training prior) or calls (neutral-heavy, "
                   "fewer false alarms; docs/MODELS.md)")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table for people; json prints JSON Lines, one object per input file")
    p.add_argument("--database-url", help="override CALLPULSE_DATABASE_URL for this run")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_model_options(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("migrate", help="upgrade the database schema to the newest Alembic revision")
    p.add_argument("--database-url", help="override CALLPULSE_DATABASE_URL")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("api", help="serve the HTTP API (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run a Celery worker on the given queues")
    p.add_argument("--queues", default="ingest,asr,infer,rules,notify",
                   help="comma list among ingest,asr,infer,rules,notify (default: all; asr is our own "
                   "speech recognition for calls without a transcript, docs/TRANSCRIPTS.md)")
    p.add_argument("--concurrency", type=int, help="worker processes (default: CPU count)")
    p.add_argument("--pool", choices=("prefork", "solo", "threads"), help="Celery pool (default prefork)")
    p.add_argument("--beat", action="store_true", help="also run the periodic sweeps (stuck recordings, "
                   "unpublished completion events, overdue webhook deliveries); one per deployment")
    p.add_argument("--name", default="callpulse@%h", help="worker node name")
    p.add_argument("--loglevel", default="INFO")
    _add_model_options(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("sweep", help="once: re-enqueue recordings stuck in a non-final state and "
                       "republish lost completion/failure events")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("retention", help="once: delete what the tenants' retention settings expired "
                       "(what beat does every CALLPULSE_RETENTION_INTERVAL_S); prints the counts")
    p.set_defaults(func=cmd_retention)

    add_admin_commands(sub)

    from callpulse.adapt_cli import add_parser as add_adapt_parser

    add_adapt_parser(sub)

    sub.add_parser("train", add_help=False,
                   help="train and evaluate the embedded emotion model, optionally with a tenant's "
                   "supervisor corrections (--tenant NAME; see 'callpulse train --help')")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["train"]:
        return cmd_train(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
