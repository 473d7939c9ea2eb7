"""Every input a row, as PACS exports name them: a folder's sub-folders are read, outputs keep the path below the
folder (equal file names in two series never collide), and dangling links, FIFOs and symlink loops are skipped
rows with the reason; the summary counts every entry."""

from __future__ import annotations

import os

import cv2
import pandas as pd
import pytest

from helpers.predict import (
    PREDICTED,
    PREDICTIONS_FILE,
    SKIPPED,
    SKIPPED_LINK,
    SKIPPED_LOOP,
    SKIPPED_SPECIAL,
    collect_inputs,
    predict_images,
)
from tests.dicom_files import dataset, generated_gray, write


def _pacs_tree(tmp_path):
    """A PACS-like export: two series with the same file names, x.png beside x.jpg, and the entries no decoder
    should be handed (a dangling link, a link loop, a link to an ancestor folder, a FIFO, a text file)."""
    root = tmp_path / "export"
    gray = generated_gray(300, 280)
    for series in ("series1", "series2"):
        (root / series).mkdir(parents=True)
        write(root / series / "IM000001.dcm", dataset(gray, "MONOCHROME2", 8, ViewPosition="PA"))
    cv2.imwrite(str(root / "x.png"), gray)
    cv2.imwrite(str(root / "x.jpg"), gray)
    (root / "notes.txt").write_text("not an image")
    os.symlink(root / "gone.png", root / "dangling.png")
    os.symlink("loop", root / "loop")
    os.symlink("..", root / "series1" / "up")
    os.mkfifo(root / "fifo")
    return root


EXPECTED = {
    "dangling.png": SKIPPED_LINK,
    "fifo": SKIPPED_SPECIAL,
    "loop": SKIPPED_LOOP,
    "notes.txt": SKIPPED,
    "series1/IM000001.dcm": PREDICTED,
    "series1/up": SKIPPED_LOOP,
    "series2/IM000001.dcm": PREDICTED,
    "x.jpg": PREDICTED,
    "x.png": PREDICTED,
}


def test_every_entry_is_collected_under_a_name_of_its_own(tmp_path):
    root = _pacs_tree(tmp_path)
    entries = collect_inputs([root])
    assert [e.path.relative_to(root).as_posix() for e in entries] == sorted(EXPECTED)
    names = [e.name for e in entries]
    assert len(set(names)) == len(names)
    assert {"series1/IM000001", "series2/IM000001", "x_png", "x_jpg"} <= set(names)
    by_path = {e.path.relative_to(root).as_posix(): e for e in entries}
    assert "does not exist" in by_path["dangling.png"].why and "FIFO" in by_path["fifo"].why
    assert "loop" in by_path["loop"].why and "loop" in by_path["series1/up"].why
    # a file given twice, or two files of one name from two folders, still get two names
    twice = collect_inputs([root / "x.png", root / "x.png", root / "series1" / "IM000001.dcm", root / "series2"])
    assert [e.name for e in twice] == ["x_png", "x_png_2", "IM000001_dcm", "IM000001_dcm_2"]


@pytest.mark.slow
def test_predict_gives_every_entry_a_row_and_predicts_both_series(trained_demo_run, tmp_path, capsys):
    root = _pacs_tree(tmp_path)
    out = tmp_path / "out"
    table = predict_images(trained_demo_run.best_checkpoint, [root], out, device="cpu", threshold=0.5)
    statuses = dict(zip((str(p)[len(str(root)) + 1 :] for p in table["input"]), table["status"], strict=True))
    assert statuses == EXPECTED
    saved = pd.read_csv(out / PREDICTIONS_FILE, keep_default_na=False)
    assert len(saved) == len(EXPECTED)
    for series in ("series1", "series2"):
        assert (out / series / "IM000001_mask.png").is_file() and (out / series / "IM000001_overlay.png").is_file()
    assert (out / "x_png_mask.png").is_file() and (out / "x_jpg_mask.png").is_file()
    masks = set(saved.loc[saved["status"] == PREDICTED, "mask_path"])
    assert len(masks) == 4 and all(os.path.isfile(m) for m in masks)
    skipped = saved[saved["status"].str.startswith("skipped: ") & (saved["status"] != SKIPPED)]
    assert all(str(root) in why for why in skipped["error"])
    summary = capsys.readouterr().out
    assert f"{len(EXPECTED)} files: 4 predicted" in summary
    assert "1 skipped: dangling link" in summary and "2 skipped: symlink loop" in summary
