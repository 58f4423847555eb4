"""KDCICAMStudent: frozen teachers from checkpoints, per-sample routing, the KD loss and its variants, a real fit."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

from cream_pl.core.errors import UserError
from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.models.cam import all_class_activation_maps
from cream_pl.models.checkpoint_keys import CLASS_KEY
from cream_pl.models.ci_cam_module import CICAMClassifier
from cream_pl.models.distillation import kd_student_loss, route_indices, route_samples
from cream_pl.models.kd_student import KDCICAMStudent, load_ci_cam_teacher

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64
COMMON = dict(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.01, train_crop_size=SIZE)


def _dm(root: Path) -> WSOLDataModule:
    return WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)


def _trainer(tmp_path: Path, **kw) -> pl.Trainer:
    defaults = dict(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    default_root_dir=str(tmp_path))
    return pl.Trainer(**{**defaults, **kw})


@pytest.fixture(scope="module")
def setup_kd(tmp_path_factory) -> dict[str, Path]:
    """Tiny confounded data + two CI-CAM teachers (different recipes) trained one step and saved."""
    root = tmp_path_factory.mktemp("kd")
    data = generate_synthetic_dataset(root / "data", seed=3, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", confounded=True)
    paths = {"data": data}
    for role, extra in (("cls", {}), ("loc", {"non_local": True, "pool_rate": 0.5})):
        pl.seed_everything(10 if role == "cls" else 11)
        teacher = CICAMClassifier(**COMMON, **extra)
        trainer = _trainer(root, max_steps=1, limit_val_batches=0)
        trainer.fit(teacher, _dm(data))
        paths[role] = root / f"{role}.ckpt"
        trainer.save_checkpoint(paths[role])
    return paths


def _student(setup_kd, **kw) -> KDCICAMStudent:
    args = dict(COMMON, cls_teacher_ckpt=str(setup_kd["cls"]), loc_teacher_ckpt=str(setup_kd["loc"]))
    return KDCICAMStudent(**{**args, **kw})


def _batch_with_every_route(student: KDCICAMStudent, n: int) -> int:
    for i in range(100):
        if set(route_samples(n, student.route_generator(i), "random").tolist()) == {0, 1, 2}:
            return i
    raise AssertionError("no batch index with all three routes")


def _seed_with_every_route(n: int) -> int:
    for seed in range(100):
        s = KDCICAMStudent(**COMMON, kd_routing="none", kd_seed=seed)
        if set(route_samples(n, s.route_generator(0, rank=0, epoch=0), "random").tolist()) == {0, 1, 2}:
            return seed
    raise AssertionError("no seed with all three routes")


# ---------------------------------------------------------------------------------------------- loss
def test_training_step_loss_is_kd_student_loss_on_teacher_subsets(setup_kd):
    torch.manual_seed(0)
    student = _student(setup_kd).eval()  # eval: no drop-connect, so the forward can be recomputed exactly
    student.load_teachers()
    teachers = student.teachers
    assert set(teachers) == {"cls", "loc"}
    assert teachers["loc"].non_local is not None  # another recipe/architecture than the student
    calls: dict[str, list[tuple[int, bool]]] = {"cls": [], "loc": []}
    for role, teacher in teachers.items():
        original = teacher.forward_features

        def spy(images, _orig=original, _role=role):
            calls[_role].append((images.shape[0], torch.is_grad_enabled()))
            return _orig(images)

        teacher.forward_features = spy  # type: ignore[method-assign]
    dm = _dm(setup_kd["data"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    images, labels = batch["image"], batch["label"]
    idx = _batch_with_every_route(student, labels.shape[0])
    routes = route_samples(labels.shape[0], student.route_generator(idx), "random")
    idx_cls, idx_loc = route_indices(routes)

    with torch.no_grad():  # expected value, computed independently before the step touches the pool
        _, out = student.ci_forward(images)
        cams_s = all_class_activation_maps(out.features_down, student.classifier.weight)
        t_logits = teachers["cls"].forward_features(images[idx_cls])[1]
        t_feats = teachers["loc"].forward_features(images[idx_loc])[0]
        t_cams = all_class_activation_maps(t_feats, teachers["loc"].classifier.weight)
    calls = {"cls": [], "loc": []}

    def expected(variant: str) -> torch.Tensor:
        return kd_student_loss(out.logits_down, cams_s, labels, routes, t_logits, t_cams, alpha=0.8, T_cls=15.0,
                               T_loc=15.0, variant=variant)[0]

    pool_before = student.context_pool.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log() without a Trainer
        loss = student.training_step(batch, idx)
    assert loss.requires_grad
    torch.testing.assert_close(loss, expected("standard"))
    # teachers ran once each, only on their own route subsets, without gradients
    assert calls == {"cls": [(len(idx_cls), False)], "loc": [(len(idx_loc), False)]}
    assert int(student.ci_head.intervention.num_updates) == 1
    any_correct = bool((out.logits_up.argmax(1) == labels).any())
    assert torch.equal(student.context_pool, pool_before) != any_correct  # pool moves iff an image was right

    # the official (quirky) KL gives another loss on the same inputs
    official = _student(setup_kd, kd_variant="official").eval()
    official.load_state_dict({k: v for k, v in student.state_dict().items()} | {
        "ci_head.intervention.context_pool": pool_before,
        "ci_head.intervention.num_updates": torch.tensor(0)})
    official.load_teachers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss_official = official.training_step(batch, idx)
    torch.testing.assert_close(loss_official, expected("official"))
    assert not torch.allclose(loss_official, loss)

    # alpha = 0 without routing is the plain down-branch cross-entropy; no teacher is needed
    plain = _student(setup_kd, kd_alpha=0.0, kd_routing="none", cls_teacher_ckpt=None, loc_teacher_ckpt=None).eval()
    plain.load_state_dict(official.state_dict())
    plain.setup("fit")
    assert plain.teachers == {}
    with torch.no_grad():
        ce = F.cross_entropy(plain.forward_features(images)[1], labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(plain.training_step(batch, idx), ce)


def test_routes_are_reproducible_and_differ_between_ranks():
    student = KDCICAMStudent(**COMMON, kd_routing="none", kd_seed=5)
    a = route_samples(64, student.route_generator(3, rank=0, epoch=1))
    b = route_samples(64, student.route_generator(3, rank=0, epoch=1))
    assert torch.equal(a, b)
    assert not torch.equal(a, route_samples(64, student.route_generator(3, rank=1, epoch=1)))
    assert not torch.equal(a, route_samples(64, student.route_generator(4, rank=0, epoch=1)))
    assert not torch.equal(a, route_samples(64, student.route_generator(3, rank=0, epoch=2)))
    other_seed = KDCICAMStudent(**COMMON, kd_routing="none", kd_seed=6)
    assert not torch.equal(a, route_samples(64, other_seed.route_generator(3, rank=0, epoch=1)))


# ---------------------------------------------------------------------------------------------- fit
def test_fit_with_all_three_routes_keeps_teachers_frozen_and_out_of_the_checkpoint(setup_kd, tmp_path):
    pl.seed_everything(0)
    student = _student(setup_kd, kd_seed=_seed_with_every_route(6))
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    teacher_ref = load_ci_cam_teacher(setup_kd["loc"])
    trainer.fit(student, _dm(setup_kd["data"]))
    metrics = trainer.callback_metrics
    assert float(metrics["train/n_cls"]) > 0 and float(metrics["train/n_loc"]) > 0
    assert float(metrics["train/n_cls"]) + float(metrics["train/n_loc"]) < 6  # some samples got route 0
    assert float(metrics["train/kd_loc"]) > 0
    loc = student.teachers["loc"]
    assert not loc.training and not any(p.requires_grad for p in loc.parameters())
    for (k, v), (k_ref, v_ref) in zip(loc.state_dict().items(), teacher_ref.state_dict().items()):
        assert k == k_ref
        torch.testing.assert_close(v.cpu(), v_ref, rtol=0, atol=0, equal_nan=True, msg=k)  # BN stats included
    assert int(student.ci_head.intervention.num_updates) == 1

    ckpt = tmp_path / "student.ckpt"
    trainer.save_checkpoint(ckpt)
    keys = set(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    assert keys == set(CICAMClassifier(**COMMON).state_dict())  # the student only, no teacher weights
    # evaluating the student needs no teacher file
    restored = KDCICAMStudent.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False,
                                                   cls_teacher_ckpt="/nonexistent/cls.ckpt",
                                                   loc_teacher_ckpt="/nonexistent/loc.ckpt")
    assert torch.equal(restored.context_pool, student.context_pool)
    _trainer(tmp_path).test(restored, _dm(setup_kd["data"]), verbose=False)
    assert set(restored.last_results["test"]["methods"]) == {"cam", "cream"}


# ---------------------------------------------------------------------------------------------- errors
def test_teacher_errors_are_explicit(setup_kd, tmp_path):
    with pytest.raises(ValueError, match="cls_teacher_ckpt"):
        _student(setup_kd, cls_teacher_ckpt=None).setup("fit")
    _student(setup_kd, cls_teacher_ckpt=None, kd_routing="loc").setup("fit")  # the loc route alone is fine
    with pytest.raises(FileNotFoundError, match="localisation teacher"):
        _student(setup_kd, loc_teacher_ckpt=str(tmp_path / "missing.ckpt")).setup("fit")
    with pytest.raises(UserError, match=f"^{tmp_path}: a folder, not the localisation teacher checkpoint"):
        _student(setup_kd, loc_teacher_ckpt=str(tmp_path)).setup("fit")  # before: "not found"
    with pytest.raises(UserError, match="classification teacher checkpoint has 3 classes, the student has 4"):
        _student(setup_kd, num_classes=4).setup("fit")
    plain = WSOLClassifier(**{k: v for k, v in COMMON.items() if k != "train_crop_size"})
    torch.save({"state_dict": plain.state_dict(), "hyper_parameters": dict(plain.hparams),
                "pytorch-lightning_version": pl.__version__, CLASS_KEY: "cream_pl.models.classifier.WSOLClassifier"},
               tmp_path / "plain.ckpt")  # a plain CAM classifier's checkpoint
    with pytest.raises(UserError, match=f"^{tmp_path / 'plain.ckpt'}: the teacher checkpoint is not a CI-CAM .* "
                                        "written by WSOLClassifier$"):
        load_ci_cam_teacher(tmp_path / "plain.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(setup_kd["cls"].read_bytes()[:4096])  # a copy cut short
    with pytest.raises(UserError, match=f"^{cut}: not a readable PyTorch checkpoint"):
        _student(setup_kd, loc_teacher_ckpt=str(cut)).setup("fit")


def test_teachers_of_other_data_or_other_normalisation_are_refused(setup_kd, tmp_path):
    """Before: only the class count was compared; a teacher of another dataset (the plain one for a confounded
    student), or one fed images normalised otherwise than in its training, distilled without a word."""
    import shutil

    student = _student(setup_kd)
    student.load_teachers()
    student.check_teacher_data(_dm(setup_kd["data"]))  # the teachers' own data and normalisation
    moved = shutil.copytree(setup_kd["data"], tmp_path / "moved")
    student.check_teacher_data(_dm(moved))  # the same dataset elsewhere: its metadata decide
    half = WSOLDataModule(str(setup_kd["data"]), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE,
                          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.raises(UserError, match=r"classification teacher was trained on images normalised with mean "
                                        r"\[0.485, 0.456, 0.406\].*set data.init_args.mean / std to the teacher's"):
        student.check_teacher_data(half)
    other = generate_synthetic_dataset(tmp_path / "other", seed=4, num_classes=3, num_train=12, num_val=6, num_test=6,
                                       min_side=72, max_side=96, image_format="png")
    with pytest.raises(UserError, match=f"classification teacher was trained on .*, other data than the student's "
                                        f"{other}"):
        student.check_teacher_data(_dm(other))


def test_teacher_errors_end_the_fit_command_in_one_line(setup_kd, tmp_path, capsys):
    """``cream-pl fit`` of a KD student with a missing teacher: one line naming the file, no traceback."""
    from cream_pl.cli import main

    missing = tmp_path / "no_teacher.ckpt"
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1, "logger": False, "enable_checkpointing": False,
                       "enable_progress_bar": False, "num_sanity_val_steps": 0,
                       "default_root_dir": str(tmp_path / "run")},
           "model": {"class_path": "cream_pl.models.kd_student.KDCICAMStudent",
                     "init_args": {**COMMON, "cls_teacher_ckpt": str(setup_kd["cls"]), "loc_teacher_ckpt": str(missing)}},
           "data": {"class_path": "cream_pl.data.WSOLDataModule",
                    "init_args": {"data_root": str(setup_kd["data"]), "batch_size": 6, "resize_size": 72,
                                  "crop_size": SIZE, "eval_size": SIZE}}}
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(tmp_path / "kd.yaml")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"cream-pl fit: error: {missing}: localisation teacher checkpoint "
                                                   "not found"), err
    assert not (tmp_path / "run").exists()  # refused before the fit's logger and config.yaml (before: left behind)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kd_alpha": 1.5}, "kd_alpha"), ({"kd_temperature_cls": 0.0}, "kd_temperature_cls"),
     ({"kd_temperature_loc": float("inf")}, "kd_temperature_loc"), ({"kd_variant": "hinton"}, "kd_variant"),
     ({"kd_routing": "all"}, "kd_routing"), ({"kd_loc_weight": -1.0}, "kd_loc_weight")],
)
def test_bad_kd_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KDCICAMStudent(**COMMON, **kwargs)
