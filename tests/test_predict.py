"""helpers.predict: masks of the input's size from any PNG/JPEG, with the trained demo checkpoint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers.core import paths
from helpers.core.paths import DEMO_CONFIG
from helpers.modeling.inference import load_model, model_input_size
from helpers.predict import predict_images
from tests.decisions import assert_decisions_agree


def _read(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_model_input_size_follows_the_training_size():
    from helpers.modeling.train import TrainParams, build_config

    params = TrainParams(config=DEMO_CONFIG, work_dir="unused")
    assert model_input_size(build_config(params)) == (128, 128)
    params.img_size = 64
    assert model_input_size(build_config(params)) == (64, 64)


@pytest.mark.slow
def test_predict_matches_mmseg_inference(trained_demo_run, demo_prepared, tmp_path):
    from mmseg.apis import inference_model

    images = sorted((demo_prepared.out_dir / "images" / "test").glob("*.png"))[:4]
    table = predict_images(trained_demo_run.best_checkpoint, images, tmp_path, device="cpu")
    model = load_model(trained_demo_run.best_checkpoint, device="cpu").net
    model.cfg.test_pipeline = model.cfg.test_dataloader.dataset.pipeline  # the 64x64 the run trained at
    for path, row in zip(images, table.itertuples(), strict=True):
        sample = inference_model(model, str(path))
        probability = sample.seg_logits.data.softmax(0)[1].numpy()  # argmax of two classes: p > 0.5
        assert_decisions_agree(_read(row.mask_path) > 0, sample.pred_sem_seg.data[0].numpy() > 0, probability, 0.5)
        assert row.max_prob == pytest.approx(float(sample.seg_logits.data.softmax(0)[1].max()), abs=1e-5)


@pytest.mark.slow
@pytest.mark.realdata
def test_predict_real_radiographs(trained_demo_run, real_sample_dir, tmp_path):
    images = sorted((real_sample_dir / paths.KAGGLE_FOLDER / "png_images").glob("*_1_.png"))[:2]
    table = predict_images(trained_demo_run.best_checkpoint, images, tmp_path / "out", device="cpu", batch_size=2)
    assert list(table["input"]) == [str(p) for p in images]
    for row in table.itertuples():
        mask = _read(row.mask_path)
        assert mask.shape == (1024, 1024) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert row.predicted_area == int((mask == 255).sum())
        assert (row.width, row.height) == (1024, 1024)
        assert 0.0 <= row.max_prob <= 1.0
        assert _read(row.overlay_path).shape == (1024, 1024, 3)


@pytest.mark.slow
def test_predict_jpeg_odd_png_and_threshold(trained_demo_run, tmp_path):
    rng = np.random.default_rng(0)
    jpeg = tmp_path / "in" / "scan.jpg"
    odd = tmp_path / "in" / "odd16.png"
    jpeg.parent.mkdir()
    cv2.imwrite(str(jpeg), rng.integers(0, 256, (150, 120, 3), dtype=np.uint8))
    cv2.imwrite(str(odd), rng.integers(0, 65536, (200, 300), dtype=np.uint16))  # 300 wide, 200 high
    out = tmp_path / "out"
    table = predict_images(trained_demo_run.best_checkpoint, [jpeg, odd], out, device="cpu")
    assert table[["width", "height"]].values.tolist() == [[120, 150], [300, 200]]
    assert _read(out / "scan_mask.png").shape == (150, 120)
    assert _read(out / "odd16_mask.png").shape == (200, 300)
    assert _read(out / "odd16_overlay.png").shape == (200, 300, 3)

    everything = predict_images(trained_demo_run.best_checkpoint, [odd], tmp_path / "all", threshold=-1.0, device="cpu")
    assert everything.loc[0, "predicted_area"] == 300 * 200
    nothing = predict_images(trained_demo_run.best_checkpoint, [odd], tmp_path / "none", threshold=1.0, device="cpu")
    assert nothing.loc[0, "predicted_area"] == 0
    assert not (_read(tmp_path / "none" / "odd16_mask.png")).any()


@pytest.mark.slow
def test_predict_names_the_unreadable_input(trained_demo_run, tmp_path):
    broken = tmp_path / "corrupt_scan.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    table = predict_images(trained_demo_run.best_checkpoint, [broken], tmp_path / "out", device="cpu")
    assert "corrupt_scan.png" in table.loc[0, "error"] and "not a readable image" in table.loc[0, "error"]
    assert np.isnan(table.loc[0, "predicted_area"])
    # two inputs of one name no longer stop the run (issue 27): each is a row, its outputs named apart
    table = predict_images(
        trained_demo_run.best_checkpoint, [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], tmp_path / "two"
    )
    assert table["status"].tolist() == ["error", "error"] and "no such file" in table.loc[1, "error"]
