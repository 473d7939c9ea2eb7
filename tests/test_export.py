"""helpers.modeling.export: ONNX probabilities equal PyTorch's; predict runs either with the run's post-processing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers.core import run_folders
from helpers.core.paths import DEMO_CONFIG
from helpers.modeling.export import export_onnx, load_onnx, sidecar_path
from helpers.modeling.inference import load_model, probability_maps
from helpers.postprocessing import DualThreshold, find_tuned_postprocess
from helpers.predict import predict_images
from helpers.workflow.evaluate_runs import evaluate_run
from tests.decisions import PROBABILITY_TOLERANCE, assert_decisions_agree
from tests.dicom_files import generated_gray

pytestmark = pytest.mark.slow


def _test_images(demo_prepared, count: int) -> list[np.ndarray]:
    files = sorted((demo_prepared.out_dir / "images" / "test").glob("*.png"))[:count]
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in files]


@pytest.fixture(scope="module")
def softmax_onnx(trained_demo_run, tmp_path_factory):
    return export_onnx(trained_demo_run.best_checkpoint, tmp_path_factory.mktemp("onnx") / "demo.onnx")


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_probabilities_equal_pytorch(batch, trained_demo_run, demo_prepared, softmax_onnx):
    torch_model = load_model(trained_demo_run.best_checkpoint, device="cpu")
    onnx_model = load_onnx(softmax_onnx)
    assert onnx_model.size == torch_model.size == (64, 64)
    images = _test_images(demo_prepared, batch)
    expected = np.stack(probability_maps(torch_model, images))
    got = np.stack(onnx_model.probability_maps(images))
    assert got.shape == expected.shape == (batch, 64, 64)
    assert np.abs(got - expected).max() < 1e-4
    assert expected.max() - expected.min() > 0.2  # a trained model: not a constant map


def test_onnx_size_is_dynamic_in_multiples_of_16(trained_demo_run, softmax_onnx):
    """At 96x128 (not the trained 64x64) the ONNX graph still equals the network's forward pass."""
    from helpers.modeling.export import ProbabilityNet

    meta = json.loads(sidecar_path(softmax_onnx).read_text())
    assert meta["input"]["dynamic"] == {"batch": True, "size_multiple": 16}
    assert meta["decision"] == {"type": "argmax", "threshold": 0.5}
    net = ProbabilityNet(load_model(trained_demo_run.best_checkpoint, device="cpu").net).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = net(x).numpy()
    got = load_onnx(softmax_onnx).session.run(["probability"], {"image": x.numpy()})[0]
    assert got.shape == (2, 96, 128)
    assert np.abs(got - expected).max() < 1e-4


def _sigmoid_checkpoint(folder) -> tuple:
    """The demo network with a one-channel sigmoid head (threshold 0.3), random weights, the head's bias set so
    that the probabilities straddle 0.3; written as a checkpoint with its config.py beside it."""
    from mmseg.apis import init_model

    from helpers.modeling.train import TrainParams, build_config

    cfg = build_config(TrainParams(config=DEMO_CONFIG, img_size=64, work_dir=str(folder)))
    cfg.model.decode_head.out_channels = 1
    cfg.model.decode_head.threshold = 0.3
    cfg.model.decode_head.loss_decode = dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(folder / run_folders.CONFIG_FILE))
    torch.manual_seed(0)
    net = init_model(cfg, None, device="cpu")
    images = torch.from_numpy(np.stack([generated_gray(64, 64, seed) for seed in range(3)])).float()
    with torch.no_grad():
        x = (images[:, None].repeat(1, 3, 1, 1) - net.data_preprocessor.mean) / net.data_preprocessor.std
        logits = net.decode_head.forward(net.extract_feat(x))
        # sigmoid(logit + b) straddles 0.3 at the median logit: b = logit(0.3) - median
        net.decode_head.conv_seg.bias += float(np.log(0.3 / 0.7)) - logits.median()
    checkpoint = folder / "sigmoid.pth"
    torch.save({"state_dict": net.state_dict(), "meta": {}}, checkpoint)
    return checkpoint, [image.numpy().astype(np.uint8) for image in images]


def test_sigmoid_head_exports_its_probability(tmp_path):
    """The one-channel head: the ONNX output is the sigmoid, equal to mmseg's, and its 0.3 decision equals
    mmseg's own pred_sem_seg (an argmax over one channel, as generic exporters do, would be all zeros)."""
    checkpoint, images = _sigmoid_checkpoint(tmp_path / "runs" / "sigmoid" / "lr0.01")
    onnx_path = export_onnx(checkpoint, tmp_path / "sigmoid.onnx")
    meta = json.loads(sidecar_path(onnx_path).read_text())
    assert meta["decision"] == {"type": "sigmoid", "threshold": pytest.approx(0.3)}
    torch_model = load_model(checkpoint, device="cpu")
    assert torch_model.sigmoid
    onnx_model = load_onnx(onnx_path)
    for batch in ([images[0]], images):
        got = np.stack(onnx_model.probability_maps(batch))
        inputs = [torch.from_numpy(np.repeat(image[None], 3, axis=0)) for image in batch]
        with torch.no_grad():
            samples = torch_model.net.test_step(dict(inputs=inputs))
        expected = np.stack([s.seg_logits.data[0].numpy() for s in samples])  # mmseg's sigmoid
        assert np.abs(got - expected).max() < 1e-4
        decided = np.stack([s.pred_sem_seg.data[0].numpy() for s in samples]).astype(bool)
        assert_decisions_agree(got > 0.3, decided, expected, 0.3)
        assert 0.05 < decided.mean() < 0.95


def test_predict_onnx_and_checkpoint_alike_with_the_tuned_postprocessing(
    trained_demo_run, demo_prepared, tmp_path, capsys
):
    """A copy of the run in an outputs layout, evaluated (post-processing tuned on val): predict applies it by
    default, prints it, and the ONNX export carries it, so both give the same masks on new images."""
    run_dir = tmp_path / "outputs" / "runs" / "demo" / "lr0.003"
    run_dir.mkdir(parents=True)
    checkpoint = shutil.copy(trained_demo_run.best_checkpoint, run_dir)
    shutil.copy(trained_demo_run.work_dir / run_folders.CONFIG_FILE, run_dir)
    assert find_tuned_postprocess(run_dir, checkpoint) is None
    result = evaluate_run(
        checkpoint,
        split="test",
        prepared_root=demo_prepared.out_dir,
        n_boot=0,
        device="cpu",
        out_dir=run_folders.eval_dir(run_dir, "test", outputs=tmp_path / "outputs"),
    )
    tuned = find_tuned_postprocess(run_dir, checkpoint)  # the val winner
    assert tuned is not None and tuned.scheme.name == result.metrics["dual_threshold"]["winner_on_val"]
    assert find_tuned_postprocess(run_dir, checkpoint, "triplet").scheme == result.postprocess
    assert tuned.image_shape == (64, 64)
    onnx_path = export_onnx(checkpoint, tmp_path / "model.onnx")
    assert json.loads(sidecar_path(onnx_path).read_text())["postprocess"] == json.loads(json.dumps(tuned.as_dict()))

    inputs = tmp_path / "in"
    inputs.mkdir()
    files = sorted((demo_prepared.out_dir / "images" / "test").glob("*.png"))[:6]
    for path in files:  # at 128x128: the areas are scaled by 4
        cv2.imwrite(str(inputs / path.name), cv2.resize(cv2.imread(str(path), 0), (128, 128)))
    capsys.readouterr()
    by_torch = predict_images(checkpoint, [inputs], tmp_path / "torch", device="cpu")
    assert "tuned on val" in capsys.readouterr().out
    by_onnx = predict_images(onnx_path, [inputs], tmp_path / "onnx")
    assert "tuned on val" in capsys.readouterr().out
    raw = predict_images(checkpoint, [inputs], tmp_path / "raw", device="cpu", postprocess="none")
    assert "model's own decision" in capsys.readouterr().out
    np.testing.assert_allclose(by_onnx["max_prob"], by_torch["max_prob"], atol=PROBABILITY_TOLERANCE)
    pp = tuned.for_shape(128, 128)
    assert pp == tuned.scheme.scaled(4)
    # The post-processed masks are the raw probability maps through the scaled scheme (PyTorch's, exactly);
    # ONNX Runtime's masks are the same but where a probability is within the runtimes' tolerance of a threshold.
    torch_model = load_model(checkpoint, device="cpu")
    for path, row, onnx_mask in zip(sorted(inputs.iterdir()), by_torch.itertuples(), by_onnx["mask_path"], strict=True):
        image = cv2.imread(str(path), 0)
        prob = probability_maps(torch_model, [cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)])[0]
        prob = cv2.resize(prob, (128, 128), interpolation=cv2.INTER_LINEAR)
        torch_mask = cv2.imread(row.mask_path, 0) > 0
        np.testing.assert_array_equal(torch_mask, pp.apply(prob))
        assert_decisions_agree(
            cv2.imread(onnx_mask, 0) > 0, torch_mask, prob, [v for k, v in pp.as_dict().items() if "threshold" in k]
        )
    assert len(raw) == len(by_torch)


def _masks_through(checkpoint, inputs: Path, scheme) -> list[np.ndarray]:
    """Each input's probability map (model size, resized back as predict does) through ``scheme`` scaled to it."""
    model = load_model(checkpoint, device="cpu")
    masks = []
    for path in sorted(inputs.iterdir()):
        image = cv2.imread(str(path), 0)
        prob = probability_maps(model, [cv2.resize(image, model.size, interpolation=cv2.INTER_AREA)])[0]
        prob = cv2.resize(prob, image.shape[::-1], interpolation=cv2.INTER_LINEAR)
        masks.append(scheme.apply(prob))
    return masks


def test_predict_applies_the_val_winner_dual_threshold_and_the_triplet_on_request(
    trained_demo_run, demo_prepared, tmp_path, capsys
):
    """A run whose triplet is tuned on a grid of one bad threshold (p > 0.01: nearly every pixel) loses on val
    to the dual threshold: predict then applies the dual threshold by default (and export writes it), and the
    triplet with ``postprocess='triplet'``."""
    from helpers.postprocessing import PostProcess, tune_postprocess

    run_dir = tmp_path / "outputs" / "runs" / "demo" / "lr0.003"
    run_dir.mkdir(parents=True)
    checkpoint = shutil.copy(trained_demo_run.best_checkpoint, run_dir)
    shutil.copy(trained_demo_run.work_dir / run_folders.CONFIG_FILE, run_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            PostProcess,
            "tune",
            classmethod(
                lambda cls, val: tune_postprocess(val, thresholds=(0.01,), component_areas=(0.0,), total_areas=(0.0,))
            ),
        )
        result = evaluate_run(
            checkpoint,
            split="test",
            prepared_root=demo_prepared.out_dir,
            n_boot=0,
            device="cpu",
            out_dir=run_folders.eval_dir(run_dir, "test", outputs=tmp_path / "outputs"),
        )
    report = result.metrics["dual_threshold"]
    assert report["winner_on_val"] == "dual_threshold"
    assert report["val_image_dice"]["dual_threshold"] > report["val_image_dice"]["triplet"]
    info = json.loads((result.out_dir / run_folders.EVAL_INFO_FILE).read_text())
    assert info["val_winner"] == "dual_threshold" and set(info["schemes"]) == {"triplet", "dual_threshold"}

    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in sorted((demo_prepared.out_dir / "images" / "test").glob("*.png"))[:3]:
        shutil.copy(path, inputs / path.name)
    capsys.readouterr()
    by_default = predict_images(checkpoint, [inputs], tmp_path / "default", device="cpu")
    assert "(dual_threshold)" in capsys.readouterr().out
    triplet = predict_images(checkpoint, [inputs], tmp_path / "triplet", device="cpu", postprocess="triplet")
    assert "(triplet)" in capsys.readouterr().out
    dual = DualThreshold.from_dict(info["schemes"]["dual_threshold"])
    for row, expected in zip(by_default.itertuples(), _masks_through(checkpoint, inputs, dual), strict=True):
        np.testing.assert_array_equal(cv2.imread(row.mask_path, 0) > 0, expected)
    for row, expected in zip(triplet.itertuples(), _masks_through(checkpoint, inputs, result.postprocess), strict=True):
        np.testing.assert_array_equal(cv2.imread(row.mask_path, 0) > 0, expected)
    assert not np.array_equal(by_default["predicted_area"], triplet["predicted_area"])  # p > 0.01 marks far more
    onnx_path = export_onnx(checkpoint, tmp_path / "model.onnx")
    assert json.loads(sidecar_path(onnx_path).read_text())["postprocess"]["scheme"] == "dual_threshold"


def test_cli_export_and_predict_report_failures(trained_demo_run, tmp_path, capsys):
    """``python -m helpers export`` then ``predict --model model.onnx`` on a folder with a colour DICOM: the
    good image is predicted, the bad one is named on stderr, and the exit status is 1."""
    from helpers.__main__ import main
    from tests.dicom_files import dataset, write

    onnx_path = tmp_path / "cli.onnx"
    main(["export", "--checkpoint", str(trained_demo_run.best_checkpoint), "--out", str(onnx_path)])
    assert onnx_path.is_file() and sidecar_path(onnx_path).is_file()
    folder = tmp_path / "in"
    write(folder / "good.dcm", dataset(generated_gray(), "MONOCHROME2", 8, PixelSpacing=[0.5, 0.5]))
    write(folder / "rgb.dcm", dataset(np.zeros((8, 8, 3), np.uint8), "RGB", 8))
    with pytest.raises(SystemExit) as exited:
        main(["predict", "--model", str(onnx_path), str(folder), "--out-dir", str(tmp_path / "out")])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "rgb.dcm" in captured.err and "colour DICOM" in captured.err
    assert (tmp_path / "out" / "good_mask.png").is_file() and not (tmp_path / "out" / "rgb_mask.png").exists()
