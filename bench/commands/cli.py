"""Command line: ``python -m bench <command> ...`` (also installed as ``wsol-bench``).

Exit codes, the same for every command: 0 success; 2 bad input (config, dataset, existing run folder or outputs,
nothing to resume: any :class:`bench.errors.InputError`, one message naming the file or key, no traceback);
1 other failure (a NaN loss, out of disk space or memory: one message, no traceback; a bug keeps its traceback);
3 (``cam`` only) some files exist but could not be read as images and were skipped (the others were processed);
130 interrupted (Ctrl-C). :func:`main` is the one place that maps errors to these codes.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Sequence

from bench.config import ConfigError, RunConfig, config_to_dict, is_study_file, load_config, load_study
from bench.errors import InputError, MissingInputError, OutputsExistError

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
EXIT_IMAGES_SKIPPED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

_EPILOG = """\
examples:
  python -m bench run configs/gap.yaml                      # train, localize, score -> results/gap/
  python -m bench run configs/gmp.yaml train.epochs=1 name=gmp_quick
  python -m bench run configs/gap.yaml --overwrite          # replace an existing results/gap/
  python -m bench run configs/gap.yaml --resume             # continue an interrupted results/gap/
  torchrun --standalone --nproc-per-node=2 -m bench run configs/gap.yaml   # 2 processes (DDP)
  python -m bench data configs/gap.yaml                     # only generate / check the dataset
  python -m bench show-config configs/gap.yaml model.pooling=gmp
  python -m bench run configs/paper.yaml --executor ray --check   # what would run, how; nothing started
  python -m bench run configs/paper.yaml [--quick]          # a study: every run, then tables and figures
  python -m bench run configs/paper.yaml --executor ray --run-resources cpu=2   # the runs as Ray tasks
  python -m bench report configs/paper.yaml                 # re-render a study's report without training
  python -m bench report configs/gap.yaml                   # re-render results/gap/index.html
  python -m bench evaluate-maps --maps my_maps/ --dataset-config configs/gap.yaml --out scores.json
  python -m bench export-wsol configs/cub_gap.yaml metadata/CUB   # the splits as wsolevaluation metadata
  python -m bench cam photo.jpg photos/ --topk 3 --out cams/    # ImageNet CAMs and boxes for any image
  python -m bench cam bird.jpg --checkpoint results/gap          # a run's network, classes and box rule
  python -m bench methods results/gap                       # other CAM methods, the run's protocol (minutes)
  python -m bench methods results/gap --methods all --images 20        # every method, Score-CAM too, 20 images
  python -m bench rescore results/paper/runs/*              # box hits for runs scored before box_hits.npz

overrides are key.sub=value pairs (value parsed as YAML), validated like the file.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="wsol-bench: train a global-pooling classifier, compute Class Activation Maps, "
                    "turn them into boxes (tau x max, largest component) and score localization.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("config", help="YAML config file, e.g. configs/gap.yaml")
        sub.add_argument("overrides", nargs="*", metavar="key=value",
                         help="override config keys, e.g. model.pooling=gmp train.epochs=1")
        return sub

    run = with_config("run", "run one benchmark (data, training, CAM evaluation, run folder in results/<name>/), "
                             "or every unfinished run of a study file and its report (results/<study>/)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    run.add_argument("--resume", action="store_true",
                     help="continue the unfinished run in the run folder from its last checkpoint (same config); "
                          "a study continues its interrupted runs this way without being asked")
    run.add_argument("--quick", action="store_true", help="study files: the study's quick variant (study.quick)")
    run.add_argument("--check", action="store_true",
                     help="check the config, the run folder(s) and the options, say what would run, and exit: "
                          "nothing is written, trained or started (needs no Ray; make does it before installing Ray)")
    _add_executor_arguments(run)
    report = with_config("report", "re-render a study's tables, comparisons, figures and web page from its "
                                   "finished runs, or a finished run's web page (no training)")
    report.add_argument("--quick", action="store_true", help="the study's quick variant (study.quick)")
    with_config("data", "generate (if needed) and check the dataset a config uses; print where it is")
    with_config("show-config", "print the resolved config (all defaults filled in) and exit")
    maps = commands.add_parser(
        "evaluate-maps", help="score other tools' .npy heat maps (one per image id) on the config's split and protocol",
        description="Score .npy heat maps (one per image of the config's eval.split, named <image_id>.npy, the "
                    "ground-truth class's map, any resolution; resized bilinearly to the evaluated frame).")
    maps.add_argument("--maps", required=True, help="folder of <image_id>.npy files")
    maps.add_argument("--dataset-config", required=True, help="YAML config whose dataset and eval keys are used")
    maps.add_argument("--out", help="also write the scores as JSON to this file (must not exist)")
    maps.add_argument("--any-range", action="store_true", help="accept any finite values (default: maps in [0, 1])")
    maps.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. eval.split=val")
    export = commands.add_parser(
        "export-wsol", help="write the config's dataset splits as wsolevaluation metadata",
        description="Write the train / val / test splits of the config's dataset as clovaai/wsolevaluation "
                    "metadata (<out>/<split>/image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt, "
                    "plus classes.txt), image ids relative to the folder that holds all images (printed). "
                    "Refuses to write over existing split folders.")
    export.add_argument("config", help="YAML config file naming the dataset, e.g. configs/cub_gap.yaml")
    export.add_argument("out", help="metadata folder to create, e.g. metadata/CUB")
    export.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    cam = commands.add_parser(
        "cam", help="CAMs, top-k classes and boxes for any images (overlay PNGs + JSON)",
        description="CAMs of the top-k classes of each image, boxed by the largest component above a threshold: "
                    "with --checkpoint, the run's own eval.tau on eval.normalization-normalized CAMs (read from "
                    "its config.yaml); without one, the CAM paper's tau = 0.2 of the max. The rule used is "
                    "printed and written in each JSON file. An overlay PNG at the image's resolution and a JSON "
                    "file per image. Exit code 2 if a path does not exist (nothing is written); exit code 3 if "
                    "some files exist but could not be read as images (they are listed and skipped).")
    cam.add_argument("images", nargs="+", help="image files and/or folders of images")
    cam.add_argument("--checkpoint", help="a run's folder (results/<run>: its checkpoint.pt) or a checkpoint file; "
                                          "its eval.tau and eval.normalization give the boxes (default: "
                                          "ImageNet-pretrained EfficientNet-Lite0, tau = 0.2 of the max)")
    cam.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    cam.add_argument("--out", default="results/cam", help="output folder (default results/cam)")
    cam.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    cam.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same images")
    _add_methods_parser(commands)
    rescore = commands.add_parser(
        "rescore", help="add box_hits.npz to runs scored before it existed (no training), so a study pairs "
                        "their MaxBoxAcc(V2)",
        description="Score each finished run's saved network again (checkpoint.pt; best_epoch.pt for an earlier "
                    "val-selected epoch) on one process, the CPU, at the precision its manifest records, and add "
                    "box_hits.npz to each scored point that lacks it, only if the re-evaluation reproduces the "
                    "run's predictions.csv and box_acc_curves.csv byte for byte; otherwise exit 2 naming the file "
                    "and line that differ, with nothing written. Then `bench report STUDY.yaml` pairs MaxBoxAcc "
                    "and MaxBoxAccV2 between the runs.")
    rescore.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                         help="finished run folders, e.g. results/paper/runs/*")
    return parser


def _add_methods_parser(commands: argparse._SubParsersAction) -> None:
    from bench.config import DEFAULT_DELETION_STEPS, DEFAULT_FAITHFULNESS_IMAGES, CamMethod
    from bench.config import SLOW_CAM_METHODS as slow

    every = typing.get_args(CamMethod)
    default = ",".join(name for name in every if name not in slow)
    methods = commands.add_parser(
        "methods", help="score CAM-family methods (Grad-CAM, Score-CAM, ...) on a finished run with its protocol",
        description="Each method's top-1 and GT-class maps for every image of the split (or the first N), scored "
                    "with the run's protocol (boxes, MaxBoxAcc, PxAP), the pointing game, and the faithfulness "
                    "metrics on the first images, timed against the forward pass; writes RUN_DIR/methods/ "
                    "(methods.csv, methods.md, methods.png, predictions_<method>.csv, faithfulness_<method>.csv). "
                    "Prints the estimated time first (each method timed on 2 images, the faithfulness metrics on "
                    "one), and what the slow methods would add.")
    methods.add_argument("run_dir", help="a finished run's folder, e.g. results/gap")
    methods.add_argument("--methods", default=default,
                         help=f"comma-separated, from: {','.join(every)}, or 'all' (default: {default}; "
                              f"{' and '.join(slow)} take hours on a CPU: name them to run them)")
    methods.add_argument("--images", type=int, metavar="N",
                         help="score only the first N images of the split, and the first N val images for the tau "
                              "from val (default: every image)")
    methods.add_argument("--faithfulness-images", type=int, default=DEFAULT_FAITHFULNESS_IMAGES, metavar="N",
                         help="the faithfulness metrics (deletion / insertion AUC, Average Drop / Increase, ROAD) on "
                              "the first N images scored: about 50 forward passes and 8 sparse solves an image per "
                              f"method (default {DEFAULT_FAITHFULNESS_IMAGES}; 0: none)")
    methods.add_argument("--deletion-steps", type=int, default=DEFAULT_DELETION_STEPS, metavar="N",
                         help="the deletion and insertion curves replace 1/N of the pixels a step, N + 1 forward "
                              f"passes a curve (default {DEFAULT_DELETION_STEPS}; more steps resolve a class "
                              "probability that falls within the first step, at their cost)")
    methods.add_argument("--split", choices=("test", "val"), help="split to score (default: the run's eval.split)")
    methods.add_argument("--overwrite", action="store_true", help="replace an existing RUN_DIR/methods/")
    methods.add_argument("--timing-batches", type=int, default=3, help="batches timed per method (default 3)")
    methods.add_argument("--score-batch-size", type=int, default=64,
                         help="masked images per forward pass in Score-CAM (default 64)")


def _add_executor_arguments(run: argparse.ArgumentParser) -> None:
    """``run``'s options for spreading a study's runs over a Ray cluster (docs/ray.md)."""
    group = run.add_argument_group("study runs in parallel on a Ray cluster (pip install -e '.[ray]'; docs/ray.md)")
    group.add_argument("--executor", choices=("sequential", "ray"), default="sequential",
                       help="study files: run the runs one after another here (default), or as Ray tasks")
    group.add_argument("--run-resources", default=None, metavar="cpu=N[,gpu=N]",
                       help="what each run's Ray task asks for (default: one CPU per torch thread the run has in a "
                            "sequential study: the config's threads, else torch's default here; no GPU)")
    group.add_argument("--ray-address", default=None,
                       help="a running Ray cluster (auto, host:6379); default $RAY_ADDRESS, else a local Ray")
    group.add_argument("--max-retries", type=int, default=2,
                       help="times a run whose worker died is started again from its checkpoint (default 2)")
    group.add_argument("--nproc", type=int, default=1,
                       help="processes per run inside its Ray task (torchrun --standalone; default 1)")


def _executor(args: argparse.Namespace, runs: list[RunConfig]) -> tuple[object | None, str]:
    """The study executor ``run``'s options ask for (None: sequential, here) and how it runs ``runs``, in words.

    ConfigError if it cannot run them (a task too small for a run's threads; Ray not installed, unless
    ``--check``), before Ray is imported or anything written.
    """
    if getattr(args, "executor", "sequential") == "sequential":
        return None, "one after another in this process"
    import importlib.util

    from bench.study.ray_executor import RayExecutor, parse_resources

    given = parse_resources(args.run_resources or "")
    executor = RayExecutor(given, args.ray_address, args.max_retries, args.nproc)
    resources = executor.plan(runs)
    if importlib.util.find_spec("ray") is None and not args.check:
        raise ConfigError("--executor ray needs Ray, which is not installed: pip install -e '.[ray]' "
                          "(make benchmark EXECUTOR=ray installs it)")
    gpus = f", {resources.gpus:g} GPU" if resources.gpus else ""
    cpus = "" if given.cpus is not None else " (one CPU per torch thread, as a sequential study runs the runs)"
    return executor, f"as Ray tasks of {resources.cpus:g} CPU{gpus} each{cpus}"


def _cam(args: argparse.Namespace) -> int:
    from bench.commands import cam_images as cam_command

    if args.topk < 1 or args.batch_size < 1:
        raise cam_command.CamCommandError(f"--topk and --batch-size must be >= 1, got {args.topk} and "
                                          f"{args.batch_size}")
    images = cam_command.plan_outputs(args.images, Path(args.out), args.overwrite)
    model = (cam_command.checkpoint_cam_model(Path(args.checkpoint)) if args.checkpoint
             else cam_command.imagenet_cam_model())
    skipped = cam_command.run_cam(images, model, Path(args.out), args.topk, args.batch_size)
    if skipped:
        print(f"{len(skipped)} file(s) skipped (unreadable): " + ", ".join(str(path) for path, _ in skipped)
              + f"; exit code {EXIT_IMAGES_SKIPPED}", file=sys.stderr)
        return EXIT_IMAGES_SKIPPED
    return 0


def _methods(args: argparse.Namespace) -> int:
    from bench.commands import compare_methods as methods_command

    if args.timing_batches < 1 or args.score_batch_size < 1:
        raise methods_command.MethodsCommandError(
            f"--timing-batches and --score-batch-size must be >= 1, got {args.timing_batches} and "
            f"{args.score_batch_size}")
    methods_command.run_methods(Path(args.run_dir), methods_command.method_names(args.methods), args.split,
                                args.overwrite, timing_batches=args.timing_batches,
                                score_batch_size=args.score_batch_size, images=args.images,
                                faithfulness_images=args.faithfulness_images, deletion_steps=args.deletion_steps)
    return 0


def _evaluate_maps(args: argparse.Namespace, config) -> int:
    import json
    from pathlib import Path

    from bench.atomic_files import write_text
    from bench.run import pipeline
    from bench.scoring.protocols import run_protocol
    from bench.scoring.saved_maps import load_score_maps, score_maps

    out = Path(args.out) if args.out else None
    if out is not None and out.exists():
        raise OutputsExistError(f"{out} already exists; choose another --out file")
    if out is not None and not out.parent.is_dir():
        raise MissingInputError(f"--out {out}: folder {out.parent} not found; create it first")
    check_maps_folder(Path(args.maps))  # before the dataset is read, or generated
    dataset = pipeline.prepare_dataset(config)
    samples, _ = pipeline.evaluated_samples(dataset, config)  # the train images are never used here
    maps = load_score_maps(Path(args.maps), samples, args.any_range)
    scores = score_maps(maps, samples, config.eval, config.model.input_size, config.eval.split, run_protocol(config))
    print(json.dumps(scores, indent=2))
    if out is not None:
        write_text(out, json.dumps(scores, indent=2) + "\n")
    return 0


def check_maps_folder(maps: Path) -> None:
    """``evaluate-maps --maps``: a folder of ``<image_id>.npy`` files, not missing, not a file, not a run folder.

    A run folder (or its ``cams.npz``) is refused with where its CAMs are: the
    run scored them already, and they are raw CAMs in one archive, not one
    map per file.
    """
    from bench.run.folder import CAMS_FILE
    from bench.scoring.saved_maps import ScoreMapError

    archive = maps if maps.name == CAMS_FILE else maps / CAMS_FILE
    if archive.is_file():
        raise ScoreMapError(
            f"--maps {maps}: {'this is' if archive == maps else 'a run folder; its CAMs are in'} {archive}, the run's "
            f"own CAMs (arrays image_ids, top1, gt_class), already scored in its metrics.json; --maps takes a folder "
            f"of <image_id>.npy files, one map per image (docs/metrics.md, 'Score other tools' maps': how to save "
            f"a run's CAMs that way)")
    if not maps.is_dir():
        found = "is a file, not a folder" if maps.exists() else "not found"
        raise ScoreMapError(f"--maps {maps}: {found}; give the folder of <image_id>.npy score maps, one per image "
                            f"of the config's eval.split")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the one place where errors become exit codes (module docstring), for every command."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except InputError as error:
        print(f"{'config error' if isinstance(error, ConfigError) else 'error'}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - one line for a failure the user can act on, re-raise a bug
        failure = describe_failure(error)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        return EXIT_FAILURE


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue after Ctrl-C: only ``run`` resumes (a run with --resume, a study by running it again).

    A run in ``train.mode: head`` does not resume (:func:`bench.run.folder.resumable`): it starts again.
    """
    if args.command != "run":
        return ""
    if is_study_file(args.config):
        return "; run the same command again to continue: the study resumes its interrupted runs"
    from bench.run.folder import resumable

    try:
        config = load_config(args.config, args.overrides)
    except InputError:  # interrupted while the config was read: nothing ran yet
        return ""
    if not resumable(config):
        return ("; train.mode head does not resume: run the same command with --overwrite (make benchmark ... "
                "OVERWRITE=1) to start it again")
    return "; continue the run with --resume"


def _dispatch(args: argparse.Namespace) -> int:
    """Run one command; errors propagate to :func:`main`."""
    if args.command == "cam":
        return _cam(args)
    if args.command == "methods":
        return _methods(args)
    if args.command == "rescore":
        from bench.run.rescore import rescore_box_hits

        for run_dir in args.run_dirs:
            rescore_box_hits(Path(run_dir))
        return 0
    if args.command in ("run", "report", "show-config", "data") and is_study_file(args.config):
        return _study_command(args)
    if getattr(args, "executor", "sequential") != "sequential":
        raise ConfigError(f"--executor {args.executor} spreads the runs of a study file; {args.config} is a single "
                          f"run (run it without --executor, or with torchrun for several processes)")
    config = load_config(getattr(args, "config", None) or args.dataset_config, args.overrides)
    if getattr(args, "check", False):
        from bench.run.pipeline import check_run_dir_free

        if not args.resume:
            check_run_dir_free(config.run_dir, args.overwrite)
        print(f"{args.config}: run {config.name} -> {config.run_dir}/; config checked, nothing run")
        return 0
    if args.command == "report":
        from bench.html.run_page import rewrite_run_page

        print(f"run page: {rewrite_run_page(config)}")
        return 0
    if args.command == "evaluate-maps":
        return _evaluate_maps(args, config)
    if args.command == "show-config":
        import yaml

        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    # Heavy imports (torch, timm) only once the config is known to be valid.
    if args.command == "export-wsol":
        return _export_wsol(args, config)
    if args.command == "data":
        return _data(config)
    from bench.html.run_page import write_run_page
    from bench.run import pipeline
    from bench.training import distributed

    try:
        pipeline.run(config, overwrite=args.overwrite, resume=args.resume, after_complete=write_run_page)
    finally:
        distributed.shutdown()
    return 0


def _export_wsol(args: argparse.Namespace, config) -> int:
    from bench.data.wsol_layout import common_image_root, write_wsol, wsolevaluation_box_convention
    from bench.run.pipeline import prepare_dataset

    dataset = prepare_dataset(config)
    image_root = common_image_root(dataset)
    write_wsol(dataset, Path(args.out), image_root,
               box_convention=wsolevaluation_box_convention(config.dataset, config.dataset_path))
    counts = ", ".join(f"{split} {count}" for split, count in dataset.counts().items())
    print(f"wrote wsolevaluation metadata to {args.out} ({counts}); image ids are relative to {image_root}")
    return 0


def _data(config) -> int:
    from bench.data.samples import check_classes
    from bench.run.pipeline import checked_samples, prepare_dataset

    dataset = prepare_dataset(config)
    train, evaluated, skipped = checked_samples(dataset, config)
    uses_val = (config.eval.calibrate or config.train.validate) and config.eval.split != "val"
    warnings = check_classes(dataset.class_names, train, dataset.splits["val"] if uses_val else [], dataset.source)
    print(dataset.source)
    for warning in warnings:
        print(f"warning: {warning}")
    counts = ", ".join(f"{split} {count}" for split, count in dataset.counts().items())
    print(f"{len(dataset.class_names)} classes; images per split: {counts}; "
          f"all {len(train) + len(evaluated)} images of train and {config.eval.split} checked"
          + (f", {len(skipped)} skipped" if skipped else ""))
    return 0


def describe_failure(error: BaseException) -> str | None:
    """One clear line for the failures a user can act on (NaN loss, disk, memory); None for a real bug."""
    from bench.atomic_files import DiskFullError
    from bench.study.ray_executor import RayStartError
    from bench.study.runner import RunsFailedError
    from bench.training.loop import NonFiniteLossError

    if isinstance(error, (NonFiniteLossError, DiskFullError, RunsFailedError, RayStartError)):
        return str(error)
    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return ("out of memory; lower train.batch_size / eval.batch_size / train.num_workers (or use fewer "
                "processes per machine), then continue with --resume")
    if isinstance(error, RuntimeError) and "DataLoader worker" in str(error) and "killed by signal" in str(error):
        return (f"a data-loading worker was killed ({error}); usually the machine ran out of memory: lower "
                f"train.num_workers or train.batch_size, then continue with --resume")
    return None


def _drawn(study, config: RunConfig) -> dict:
    """A search trial's drawn values (``train.lr=0.00479``), for show-config."""
    from bench.config import search_trial_index
    from bench.study.search import arm_of

    return study.search.draw(arm_of(study, config), search_trial_index(config))


def _study_command(args: argparse.Namespace) -> int:
    """``run`` / ``report`` / ``show-config`` on a study file."""
    study, runs = load_study(args.config, quick=getattr(args, "quick", False), overrides=args.overrides)
    if args.command == "show-config":
        grid = "; ".join(f"{key}: {list(values)}" for key, values in study.grid)
        if study.search is None:
            print(f"study {study.name} ({len(runs)} runs from {study.base}; grid {grid}) -> {study.study_dir}/")
        else:
            print(f"study {study.name}: a search ({study.search.trials} trial(s) per value of {study.compare_key}, "
                  f"scored on val), then final runs of each value's chosen trial (grid {grid}) -> "
                  f"{study.study_dir}/\n  trials (train_seed {study.search.train_seed}; drawn values after each):")
        for config in runs:
            drawn = "" if study.search is None else "  " + ", ".join(
                f"{key}={value}" for key, value in _drawn(study, config).items())
            print(f"  {config.run_dir}{drawn}")
        if any(config.eval.frame != "input" for config in runs):  # the runner (and torch) only then
            from bench.study.runner import frame_note

            print(frame_note(study, runs))
        return 0
    from bench.html.run_page import write_run_page
    from bench.html.study_page import write_study_page
    from bench.study import runner as studies

    if args.command == "data":
        from bench.run import pipeline

        for dataset_config in dict.fromkeys(config.dataset for config in runs):  # distinct, in order
            config = next(c for c in runs if c.dataset == dataset_config)
            print(pipeline.prepare_dataset(config).source)
        return 0
    if args.command == "report":
        if study.search is not None:
            from bench.study.search import report_search

            report_search(study, runs, study_page=write_study_page)
        else:
            studies.write_report(study, runs, study_page=write_study_page)
    else:
        from bench.training import distributed

        executor, how = _executor(args, runs)
        if args.check:
            states = studies.study_states(study, runs, args.overwrite)
            reused = sum(state == "complete" for state in states.values())
            print(f"study {study.name}: {len(runs)} runs ({reused} finished and reused, {len(runs) - reused} to "
                  f"run {how}) -> {study.study_dir}/; checked, nothing run")
            note = studies.frame_note(study, runs)
            if note:
                print(note)
            return 0
        try:
            if study.search is not None:
                from bench.study.search import run_search

                run_search(study, runs, overwrite=args.overwrite, executor=executor, run_page=write_run_page,
                           study_page=write_study_page)
            else:
                studies.run_study(study, runs, overwrite=args.overwrite, executor=executor,
                                  run_page=write_run_page, study_page=write_study_page)
        finally:
            distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
