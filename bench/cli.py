"""Command line: ``python -m bench <command> ...`` (also installed as ``wsol-bench``).

Exit codes: 0 success, 2 bad input (config, dataset, existing run folder or outputs), 1 other failure,
3 (``cam`` only) some images could not be read and were skipped (the others were processed).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from bench.config import ConfigError, config_to_dict, load_config

EXIT_BAD_INPUT = 2
EXIT_IMAGES_SKIPPED = 3

_EPILOG = """\
examples:
  python -m bench run configs/gap.yaml                      # train, localize, score -> results/gap/
  python -m bench run configs/gmp.yaml train.epochs=1 name=gmp_quick
  python -m bench run configs/gap.yaml --overwrite          # replace an existing results/gap/
  python -m bench data configs/gap.yaml                     # only generate / check the dataset
  python -m bench show-config configs/gap.yaml model.pooling=gmp
  python -m bench cam photo.jpg photos/ --topk 3 --out cams/    # ImageNet CAMs and boxes for any image
  python -m bench cam bird.jpg --checkpoint results/gap/checkpoint.pt

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

    run = with_config("run", "run one benchmark: data, training, CAM evaluation, run folder in results/<name>/")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    with_config("data", "generate (if needed) and check the dataset a config uses; print where it is")
    with_config("show-config", "print the resolved config (all defaults filled in) and exit")
    cam = commands.add_parser(
        "cam", help="CAMs, top-k classes and boxes for any images (overlay PNGs + JSON)",
        description="CAMs of the top-k classes of each image, boxes at tau = 0.2 of the max (largest component), "
                    "an overlay PNG at the image's resolution and a JSON file per image. Exit code 3 if some "
                    "files could not be read (they are listed and skipped).")
    cam.add_argument("images", nargs="+", help="image files and/or folders of images")
    cam.add_argument("--checkpoint", help="a run's checkpoint.pt (default: ImageNet-pretrained EfficientNet-Lite0)")
    cam.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    cam.add_argument("--out", default="results/cam", help="output folder (default results/cam)")
    cam.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    cam.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same images")
    return parser


def _cam(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench import camtool

    try:
        if args.topk < 1 or args.batch_size < 1:
            raise camtool.CamToolError(f"--topk and --batch-size must be >= 1, got {args.topk} and {args.batch_size}")
        images = camtool.plan_outputs(args.images, Path(args.out), args.overwrite)
        model = (camtool.checkpoint_cam_model(Path(args.checkpoint)) if args.checkpoint
                 else camtool.imagenet_cam_model())
        skipped = camtool.run_cam(images, model, Path(args.out), args.topk, args.batch_size)
    except (camtool.CamToolError, ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if skipped:
        print(f"{len(skipped)} file(s) skipped (unreadable): " + ", ".join(str(path) for path, _ in skipped)
              + f"; exit code {EXIT_IMAGES_SKIPPED}", file=sys.stderr)
        return EXIT_IMAGES_SKIPPED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "cam":
        return _cam(args)
    try:
        config = load_config(args.config, args.overrides)
        if args.command == "show-config":
            import yaml

            print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
            return 0
        # Heavy imports (torch, timm) only once the config is known to be valid.
        from bench import pipeline

        if args.command == "data":
            dataset = pipeline.prepare_dataset(config)
            train, evaluated, skipped = pipeline.checked_samples(dataset, config)
            print(dataset.source)
            counts = ", ".join(f"{split} {count}" for split, count in dataset.counts().items())
            print(f"{len(dataset.class_names)} classes; images per split: {counts}; "
                  f"all {len(train) + len(evaluated)} images of train and {config.eval.split} checked"
                  + (f", {len(skipped)} skipped" if skipped else ""))
            return 0
        pipeline.run(config, overwrite=args.overwrite)
        return 0
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - map known input errors to exit 2, re-raise the rest
        from bench.data import DatasetFormatError
        from bench.pipeline import RunExistsError

        if isinstance(error, (DatasetFormatError, RunExistsError, FileNotFoundError)):
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
