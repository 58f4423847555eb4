"""``cream-pl data {synth,cub,check}``: write the embedded benchmark, convert CUB, check a dataset.

Example:
    $ cream-pl data synth --out data/synth --seed 0
    $ cream-pl data synth --out data/synth_confounded --seed 0 --confounded
    $ cream-pl data cub --src data/CUB_200_2011 --out data/cub --val-per-class 5
    $ cream-pl data check data/synth --files
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_parser", "check_dataset"]


def check_dataset(
    root: Path | str,
    splits: list[str] | None = None,
    *,
    files: bool = False,
    strict: bool = True,
    num_classes: int | None = None,
    image_root: Path | str | None = None,
    mask_root: Path | str | None = None,
) -> dict[str, list[str]]:
    """Check every split (or ``splits``) of a dataset root; returns ``{split: problems}``.

    Args:
        root: dataset root with ``metadata/<split>/``.
        splits: split names; default every directory under ``metadata/``.
        files: also decode every image and mask and compare image sizes.
        strict: report deviations from the letter of the format too (see ``check_split``).
        num_classes: label range; default the lines of ``class_names.txt`` when present.
        image_root / mask_root: where the image ids and mask paths are relative to (default ``<root>/images`` and
            ``<root>/masks``; the wsolevaluation OpenImages layout keeps both in one ``OpenImages/`` folder).
    """
    from cream_pl.data.metadata import check_split, leaked_images, read_class_names, split_dirs

    root = Path(root)
    meta_root = root / "metadata"
    images = Path(image_root) if image_root is not None else root / "images"
    masks = Path(mask_root) if mask_root is not None else root / "masks"
    if not meta_root.is_dir():
        return {"": [f"{meta_root}: metadata directory not found"]}
    names_file, dataset = root / "class_names.txt", []  # problems of the dataset as a whole
    if names_file.exists() and not names_file.is_file():
        dataset.append(f"{names_file}: not a file (one class name per line)")
    elif names_file.is_file():
        listed = len(read_class_names(names_file))
        if num_classes is None:
            num_classes = listed
        elif listed != num_classes:  # fit refuses the dataset so: the data module reads the file
            dataset.append(f"{names_file}: {listed} class names, but --num-classes is {num_classes}")
    if not images.is_dir():  # without --files too: nothing of the dataset could load
        dataset.append(f"{images}: image folder not found" + ("" if image_root is not None else
                                                                 " (--image-root: where the images are kept)"))
    names = splits or [p.name for p in split_dirs(meta_root)]
    if not names:
        return {"": [*dataset, f"{meta_root}: no split directories"]}
    report = {"" : dataset} if dataset else {}
    report |= {
        s: check_split(meta_root / s, num_classes=num_classes, strict=strict,
                       image_root=images if files else None, mask_root=masks if files else None)
        if (meta_root / s).is_dir() else [f"{meta_root / s}: split folder not found (--split)"]
        for s in names
    }
    for split, leaks in leaked_images(meta_root).items():
        if split in report:
            report[split] += leaks
    return report


def _print_report(report: dict[str, list[str]], max_problems: int) -> int:
    bad = 0
    for split, problems in report.items():
        if problems:
            bad += 1
            print(f"{split or 'dataset'}: {len(problems)} problem(s)", file=sys.stderr)
            for p in problems[:max_problems]:
                print(f"  {p}", file=sys.stderr)
            if len(problems) > max_problems:
                print(f"  ... and {len(problems) - max_problems} more", file=sys.stderr)
        else:
            print(f"{split}: ok")
    return 1 if bad else 0


def _run_synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cream_pl.data.metadata import read_split
    from cream_pl.data.synth import PRESETS, generate_synthetic_dataset, holds_dataset

    # the two options only shape a confounded dataset: without --confounded they would be silently ignored
    for option, value in (("--usual-background-prob", args.usual_background_prob),
                          ("--confounded-eval", args.confounded_eval)):
        if value is not None and not args.confounded:
            from cream_pl.core.errors import UserValueError

            raise UserValueError(f"{option} {value} only applies with --confounded (class-correlated backgrounds); "
                                 f"add --confounded or drop {option}")
    options = ("num_classes", "num_train", "num_val", "num_test", "min_side", "max_side", "usual_background_prob",
               "confounded_eval")
    given = {k: getattr(args, k) for k in options if getattr(args, k) is not None}  # unset: the preset's value
    try:
        cfg = replace(PRESETS[args.preset], **given, confounded=args.confounded, image_format=args.image_format)
    except ValueError as err:  # the generator names its fields: the user gave options (num_classes: --num-classes)
        import re

        from cream_pl.core.errors import UserValueError

        fields = re.compile(r"\b(" + "|".join(options) + r")\b")
        text = fields.sub(lambda m: "--" + m.group(1).replace("_", "-"), str(err))
        unset = sorted(set(fields.findall(str(err))) - set(given))
        raise UserValueError(text + (f" ({', '.join('--' + k.replace('_', '-') for k in unset)}: preset "
                                     f"{args.preset}'s)" if unset else "")) from None
    start = time.perf_counter()
    if not args.overwrite and holds_dataset(args.out, args.seed, cfg):  # make data-synth again: nothing to do
        root, done = Path(args.out), "already holds"
    else:
        root, done = generate_synthetic_dataset(args.out, args.seed, config=cfg, overwrite=args.overwrite), "wrote"
    elapsed = time.perf_counter() - start
    counts = ", ".join(f"{s} {len(read_split(root / 'metadata' / s))}" for s in ("train", "val", "test"))
    print(f"{done} {root} ({cfg.num_classes} classes; {counts} images; seed {args.seed}, preset {args.preset})"
          + (f" in {elapsed:.1f} s" if done == "wrote" else ": nothing to write"))
    return _print_report(check_dataset(root), args.max_problems)


def _run_cub(args: argparse.Namespace) -> int:
    from cream_pl.data.cub import convert_cub

    s = convert_cub(args.src, args.out, val_per_class=args.val_per_class, seed=args.seed, link_images=not args.no_link,
                    overwrite=args.overwrite)
    print(f"wrote {s.out}: {s.num_classes} classes, train {s.num_train}, val {s.num_val}, test {s.num_test} images"
          + (f"; {s.num_clipped_boxes} box(es) clipped to the image" if s.num_clipped_boxes else ""))
    if not s.num_val and (s.out / "metadata" / "val").is_dir():
        print(f"val: kept {s.out / 'metadata' / 'val'} (not written by data cub, e.g. the benchmark's CUBV2)")
    elif not s.num_val:
        print("no val split: the benchmark's val is CUBV2 (put its metadata in <out>/metadata/val), "
              "or rerun with --val-per-class N to hold out N train images per class")
    return _print_report(check_dataset(s.out), args.max_problems)


def _run_check(args: argparse.Namespace) -> int:
    from cream_pl.core.errors import UserValueError

    root = Path(args.root)  # what the user named wrongly is a usage error (status 2), not a problem of the dataset
    if not root.is_dir():
        raise UserValueError(f"{root}: not a folder (a dataset root holding metadata/ and images/)")
    meta = root / "metadata"
    unknown = [s for s in args.split or () if not (meta / s).is_dir()]
    if meta.is_dir() and unknown:
        have = sorted(p.name for p in meta.iterdir() if p.is_dir())
        raise UserValueError(f"{meta / unknown[0]}: no such split (--split {unknown[0]}); the dataset's splits: {have}")
    report = check_dataset(args.root, args.split, files=args.files, strict=not args.lenient,
                           num_classes=args.num_classes, image_root=args.image_root, mask_root=args.mask_root)
    return _print_report(report, args.max_problems)


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print user errors (bad input, existing output) as one line and exit 2 instead of a traceback."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (ValueError, OSError) as err:
            from cream_pl.core.errors import user_error_message

            message = user_error_message(err) or " ".join(str(err).split())
            print(f"cream-pl data {args.data_command}: error: {message}", file=sys.stderr)
            return 2

    return wrapper


run_synth = _guarded(_run_synth)
run_cub = _guarded(_run_cub)
run_check = _guarded(_run_check)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data`` and its sub-commands (their arguments live in :mod:`cream_pl.cli.parsers`)."""
    from cream_pl.cli.parsers import SUBCOMMANDS

    return SUBCOMMANDS["data"].add(subparsers)
