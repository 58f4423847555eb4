"""The embedded synthetic benchmark: format, determinism, ground truth, confounding, CLI."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cream_pl.cli import main
from cream_pl.cli.data_commands import check_dataset
from cream_pl.data.metadata import read_class_names, read_split
from cream_pl.data.synth import (
    BACKGROUND_PHOTOS,
    HEAD_SHAPES,
    SynthConfig,
    _area,
    _make_object,
    class_specs,
    generate_synthetic_dataset,
)

SMALL = dict(num_classes=3, num_train=9, num_val=3, num_test=6, min_side=64, max_side=96)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth") / "d", seed=3, **SMALL)


def test_passes_the_format_check_with_files(small: Path) -> None:
    report = check_dataset(small, files=True)
    assert report == {"test": [], "train": [], "val": []}


def test_same_seed_same_bytes_other_seed_other_bytes(small: Path, tmp_path: Path) -> None:
    again = generate_synthetic_dataset(tmp_path / "again", seed=3, **SMALL)
    assert _digest(again) == _digest(small)
    other = generate_synthetic_dataset(tmp_path / "other", seed=4, **SMALL)
    a, b = _digest(other), _digest(small)
    assert a.keys() != b.keys() or a != b
    assert a["class_names.txt"] == b["class_names.txt"]


def test_every_split_has_exact_boxes_and_masks(small: Path) -> None:
    names = read_class_names(small / "class_names.txt")
    assert names == [f"{c}_{s}" for c, s in class_specs(3)]
    for split, count in (("train", 9), ("val", 3), ("test", 6)):
        meta = read_split(small / "metadata" / split, num_classes=3)
        assert len(meta) == count and meta.has_boxes and meta.has_masks and meta.has_sizes
        assert sorted(np.bincount([s.label for s in meta.samples]).tolist()) == [count // 3] * 3  # balanced
        for s in meta.samples:
            assert s.image_id.startswith(f"{split}/{s.label:02d}_{names[s.label]}/")
            img = cv2.imread(str(small / "images" / s.image_id))
            w, h = s.size  # type: ignore[misc]
            assert img.shape == (h, w, 3) and 64 <= w <= 96 and 64 <= h <= 96
            assert s.masks is not None and len(s.masks.mask_paths) == len(s.boxes)
            union = np.zeros((h, w), bool)
            for rel, box in zip(s.masks.mask_paths, s.boxes):
                m = cv2.imread(str(small / "masks" / rel), cv2.IMREAD_UNCHANGED)
                assert m.shape == (h, w) and set(np.unique(m).tolist()) == {0, 255}
                ys, xs = np.nonzero(m)
                assert box == (xs.min(), ys.min(), xs.max(), ys.max())  # tight inclusive box of the mask
                assert not (union & (m > 0)).any()  # instances never overlap
                union |= m > 0
            ignore = cv2.imread(str(small / "masks" / s.masks.ignore_path), cv2.IMREAD_UNCHANGED)  # type: ignore[arg-type]
            assert ignore.shape == (h, w) and not ignore.any()


def test_object_scale_follows_the_config(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "d", seed=0, num_classes=2, num_train=2, num_val=2, num_test=40,
                                      second_object_prob=0.0, object_area=(0.2, 0.4))
    fractions = []
    for s in read_split(root / "metadata/test").samples:
        (x0, y0, x1, y1), (w, h) = s.boxes[0], s.size
        fractions.append((x1 - x0 + 1) * (y1 - y0 + 1) / (w * h))
    # the box is shrunk only when the rotated object would not fit the image
    assert 0.1 < min(fractions) and max(fractions) < 0.42
    assert 0.2 <= float(np.median(fractions)) <= 0.4


@pytest.mark.parametrize("shape", HEAD_SHAPES)
def test_head_is_a_small_part_of_the_object(shape: str) -> None:
    rng = np.random.default_rng(0)
    obj = _make_object(rng, shape, 0.13, tail=True)
    body = sum(_area(p) for p in obj.body)
    head = _area(obj.head)  # type: ignore[arg-type]
    assert head / (head + body) == pytest.approx(0.13, abs=1e-6)


def test_confounded_backgrounds(tmp_path: Path) -> None:
    cfg = dict(num_classes=4, num_train=120, num_val=8, num_test=40, min_side=48, max_side=48, clutter=(0, 0),
               distractor_body_prob=0.0, distractor_head_prob=0.0)
    for confounded, eval_mode in ((True, "uniform"), (True, "unusual"), (False, "uniform")):
        root = generate_synthetic_dataset(tmp_path / f"{confounded}{eval_mode}", seed=1, confounded=confounded,
                                          confounded_eval=eval_mode, **cfg)
        rates = {}
        for split in ("train", "test"):
            rows = [line.split(",") for line in (root / f"metadata/{split}/backgrounds.txt").read_text().split("\n")]
            assert all(r[1] in BACKGROUND_PHOTOS for r in rows)
            labels = {s.image_id: s.label for s in read_split(root / f"metadata/{split}").samples}
            for image_id, photo, usual in rows:
                assert (photo == BACKGROUND_PHOTOS[labels[image_id] % len(BACKGROUND_PHOTOS)]) == (usual == "1")
            rates[split] = np.mean([r[2] == "1" for r in rows])
        if confounded:
            assert 0.7 <= rates["train"] <= 0.9  # p = 0.8, 120 draws
        else:
            assert rates["train"] < 0.3  # uniform over 12 photos
        assert rates["test"] < 0.3
        if eval_mode == "unusual":
            assert rates["test"] == 0.0


def test_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        SynthConfig(num_classes=1)
    with pytest.raises(ValueError, match="object_area"):
        SynthConfig(object_area=(0.5, 0.2))
    with pytest.raises(ValueError, match="unknown synthetic dataset option"):
        generate_synthetic_dataset(tmp_path / "x", num_clases=3)
    with pytest.raises(ValueError, match="seed"):
        generate_synthetic_dataset(tmp_path / "x", seed=-1)


def test_refuses_to_overwrite_without_flag(small: Path) -> None:
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthetic_dataset(small, seed=3, **SMALL)


def test_overwrite_never_removes_a_users_folders_and_a_cut_generation_is_its_own(tmp_path: Path, monkeypatch) -> None:
    """Before: ``--overwrite`` removed any ``images/`` or ``masks/`` at ``--out`` (a user's photos with them)."""
    user = tmp_path / "user"
    (user / "images").mkdir(parents=True)
    (user / "images" / "my_photo.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="holds images but no synth_config.json of this generator"):
        generate_synthetic_dataset(user, seed=3, overwrite=True, **SMALL)
    assert (user / "images" / "my_photo.jpg").read_bytes() == b"precious"
    # a generation killed half-way (no synth_config.json yet) is the generator's: replaced with --overwrite
    cut = tmp_path / "cut"
    calls = []

    def killed(path, image, params):  # the third image's write is where the process dies
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, image, params)

    import cream_pl.data.synth as synth

    real = synth._encode
    monkeypatch.setattr(synth, "_encode", killed)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(cut, seed=3, **SMALL)
    monkeypatch.setattr(synth, "_encode", real)
    assert (cut / "images").is_dir() and not (cut / "synth_config.json").exists()
    with pytest.raises(FileExistsError, match="already holds a synthetic dataset"):
        generate_synthetic_dataset(cut, seed=3, **SMALL)
    generate_synthetic_dataset(cut, seed=3, overwrite=True, **SMALL)
    assert (cut / "synth_config.json").is_file() and not (cut / ".synth_writing").exists()


def test_cli_synth_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["data", "synth", "--out", str(out), "--seed", "5", "--num-classes", "2", "--num-train", "2",
            "--num-val", "2", "--num-test", "2", "--min-side", "48", "--max-side", "64", "--image-format", "png"]
    assert main(args) == 0
    assert "train: ok" in capsys.readouterr().out
    assert len(list((out / "images/train").rglob("*.png"))) == 2
    import json
    from dataclasses import asdict

    from cream_pl.data.synth import PRESETS

    written = json.loads((out / "synth_config.json").read_text())["config"]
    cub = json.loads(json.dumps(asdict(PRESETS["cub"])))
    assert {k: written[k] for k in ("body_head_tint", "centre_sd", "distractor_body_prob")} == {
        k: cub[k] for k in ("body_head_tint", "centre_sd", "distractor_body_prob")}  # the default preset is cub
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(args) == 0  # the same dataset again (make data-synth twice): nothing is written
    said = capsys.readouterr().out
    assert f"already holds {out} (2 classes" in said and ": nothing to write" in said and " s\n" not in said
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert main([*args[:-1], "jpg"]) == 2  # another dataset needs --overwrite (before: the same one did too)
    assert "already holds a synthetic dataset; add --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["data", "synth", "--out", ""]) == 2  # before: a dataset written into the working folder
    assert "argument --out: an empty value" in capsys.readouterr().err
    # the generator's refusals name the options the user gave, not its fields (before: "num_classes must be ...")
    for argv, said in [(["--num-classes", "1"], "--num-classes must be in [2, 36], got 1"),
                       (["--min-side", "1000"], "need 32 <= --min-side <= --max-side, got 1000, 320 (--max-side: "
                                                "preset cub's)")]:
        assert main(["data", "synth", "--out", str(tmp_path / "bad"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"cream-pl data synth: error: {said}", err
    assert not (tmp_path / "bad").exists()
    assert main(["data", "check", str(out), "--files"]) == 0
    image_id = (out / "metadata/test/image_ids.txt").read_text().split("\n")[1]
    (out / "images" / image_id).write_bytes(b"")
    capsys.readouterr()
    assert main(["data", "check", str(out), "--files"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'images' / image_id}: empty file" in err and "image_ids.txt:2:" in err


@pytest.mark.slow
def test_default_benchmark_is_quick_to_generate(tmp_path: Path) -> None:
    start = time.perf_counter()
    root = generate_synthetic_dataset(tmp_path / "default", seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"default generation took {elapsed:.1f} s"  # ~13 s on one core here; budget 30 s
    assert [len(read_split(root / "metadata" / s)) for s in ("train", "val", "test")] == [480, 80, 160]
    assert check_dataset(root) == {"test": [], "train": [], "val": []}


def test_cub_preset_is_centred_single_object_and_hard_preset_is_unchanged(tmp_path) -> None:
    import dataclasses

    import numpy as np

    from cream_pl.data.metadata import read_split
    from cream_pl.data.synth import PRESETS, SynthConfig, generate_synthetic_dataset

    assert PRESETS["hard"] == SynthConfig()  # today's benchmark, by name
    small = dict(num_classes=3, num_train=3, num_val=3, num_test=60, min_side=96, max_side=128, image_format="png")
    cub = generate_synthetic_dataset(tmp_path / "cub", config=dataclasses.replace(PRESETS["cub"], **small))
    samples = read_split(cub / "metadata" / "test").samples
    centres = np.array([((b[0] + b[2]) / 2 / s.size[0], (b[1] + b[3]) / 2 / s.size[1])
                        for s in samples for b in s.boxes[:1]])
    areas = np.array([(s.boxes[0][2] - s.boxes[0][0] + 1) * (s.boxes[0][3] - s.boxes[0][1] + 1) / (s.size[0] * s.size[1])
                      for s in samples])
    assert abs(centres.mean() - 0.5) < 0.05 and centres.std(0).max() < 0.12  # CUB: 0.50 +- 0.09 / 0.07
    assert 0.2 < np.median(areas) < 0.45  # CUB: median 0.32
    # the hard preset's random stream did not move when the CUB knobs were added: every image and metadata
    # file hashes as the generator before them wrote it (commit de0a156, the pinned software stack)
    import hashlib

    tiny = dict(small, num_test=20)
    root = generate_synthetic_dataset(tmp_path / "hard", seed=0, config=dataclasses.replace(PRESETS["hard"], **tiny))
    h = hashlib.sha1()
    for p in sorted((root / "images").rglob("*.png")) + sorted((root / "metadata").rglob("*.txt")):
        h.update(p.read_bytes())
    assert h.hexdigest() == "fa494e4c48bbf33f10bbff1b6d4e7c0a8884ab0d"


def test_body_head_tint_moves_the_body_colour_toward_the_head_and_nothing_else(tmp_path) -> None:
    import dataclasses

    import cv2
    import numpy as np

    from cream_pl.data.metadata import read_split
    from cream_pl.data.synth import HEAD_COLOURS, PRESETS, class_specs, generate_synthetic_dataset

    small = dict(num_classes=2, num_train=2, num_val=2, num_test=8, min_side=96, max_side=128, image_format="png",
                 clutter=(0, 0))
    roots = {t: generate_synthetic_dataset(tmp_path / f"t{t}", config=dataclasses.replace(PRESETS["cub"], **small,
                                                                                          body_head_tint=t))
             for t in (0.0, 0.5)}
    specs = class_specs(2)
    closer = []
    for s0, s5 in zip(read_split(roots[0.0] / "metadata" / "test").samples,
                      read_split(roots[0.5] / "metadata" / "test").samples):
        assert s0.boxes == s5.boxes  # same geometry: only the colour moved
        head = np.array(HEAD_COLOURS[specs[s0.label][0]], np.float64)
        x0, y0, x1, y1 = s0.boxes[0]
        dist = []
        for root in (roots[0.0], roots[0.5]):
            img = cv2.cvtColor(cv2.imread(str(root / "images" / s0.image_id)), cv2.COLOR_BGR2RGB).astype(np.float64)
            mask = cv2.imread(str(root / "masks" / s0.masks.mask_paths[0]), cv2.IMREAD_GRAYSCALE) > 0
            dist.append(np.linalg.norm(img[mask].mean(0) - head))
        closer.append(dist[1] < dist[0])
    assert all(closer)
    with pytest.raises(ValueError, match="body_head_tint"):
        dataclasses.replace(PRESETS["cub"], body_head_tint=1.5)


def test_the_synth_help_states_each_presets_sizes() -> None:
    """Before: --num-train's help said 480 (the hard preset's) where the default cub preset has 2400."""
    from cream_pl.cli import build_parser
    from cream_pl.data.synth import PRESETS

    parser = build_parser()
    data = next(a for a in parser._subparsers._group_actions[0].choices["data"]._actions if a.dest == "data_command")
    helps = {a.dest: a.help for a in data.choices["synth"]._actions}
    for key in ("num_classes", "num_train", "num_val", "num_test"):
        values = {name: getattr(preset, key) for name, preset in PRESETS.items()}
        if len(set(values.values())) == 1:
            assert f"({next(iter(values.values()))})" in helps[key], helps[key]
        else:
            assert all(f"{name} {value}" in helps[key] for name, value in values.items()), helps[key]
