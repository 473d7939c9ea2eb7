"""predict accounts for every file: warnings for inputs the model was not made for, named errors for files no
decoder reads, "skipped" for what is not an image, a table after a fatal error, and no silent empty run."""

from __future__ import annotations

import errno

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.predict import (
    ERROR,
    NOT_DONE,
    PREDICTED,
    PREDICTIONS_FILE,
    REFUSED,
    SKIPPED,
    NoInputsError,
    input_warnings,
    predict_images,
)
from tests.dicom_files import dataset, generated_gray, write

SPACING = [0.2, 0.2]


def write_without_preamble(path, ds):
    """An older archive's file: the dataset alone, implicit VR little endian, no preamble and no file meta."""
    del ds.file_meta
    ds.preamble = None
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[:2] == b"\x08\x00"
    return path


def test_warnings_follow_the_attributes():
    gray = np.zeros((300, 300), np.uint8)
    frontal_dx = {"Modality": "DX", "ViewPosition": "PA", "BodyPartExamined": "CHEST"}
    assert input_warnings(gray, (0.2, 0.2), frontal_dx) == []
    assert input_warnings(gray, None, None) == []  # a PNG says nothing of modality or spacing
    assert input_warnings(np.zeros((300, 255), np.uint8), None, None) == [
        "small image 255x300 (under 256 px on a side)"
    ]
    found = input_warnings(gray, None, {"Modality": "CT", "ViewPosition": "LL", "BodyPartExamined": "HEAD"})
    assert [w.split(" ")[0] for w in found] == ["modality", "view", "body", "no"]
    processing = input_warnings(gray, (0.2, 0.2), {**frontal_dx, "PresentationIntentType": "FOR PROCESSING"})
    assert processing == ["DX FOR PROCESSING (raw detector data, not for presentation)"]
    assert input_warnings(gray, (0.2, 0.2), {"Modality": "CR", "ViewPosition": "AP"}) == []


def test_empty_input_says_so(tmp_path):
    from helpers.__main__ import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(NoInputsError, match="no input files"):
        predict_images("unused.pth", [tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(SystemExit, match="no input files"):
        main(["predict", "--checkpoint", "unused.pth", "--out-dir", str(tmp_path / "out"), str(tmp_path / "empty")])
    assert not (tmp_path / "out").exists()


def _folder(tmp_path):
    """Every kind of input, in one folder (see the test below)."""
    folder = tmp_path / "in"
    folder.mkdir()
    gray = generated_gray(300, 280)
    cv2.imwrite(str(folder / "a_good.png"), gray)
    cv2.imwrite(str(folder / "b_good.jpg"), gray)
    write(
        folder / "c_ct.dcm",
        dataset(gray, "MONOCHROME2", 8, Modality="CT", BodyPartExamined="ABDOMEN", PixelSpacing=SPACING),
    )
    write(folder / "d_lateral.dcm", dataset(gray, "MONOCHROME2", 8, ViewPosition="LL", PixelSpacing=SPACING))
    write_without_preamble(
        folder / "e_no_preamble", dataset(gray, "MONOCHROME2", 8, ViewPosition="PA", PixelSpacing=SPACING)
    )
    cv2.imwrite(str(folder / "f_tiny.png"), generated_gray(100, 80))
    (folder / "g_zero_bytes.png").write_bytes(b"")
    good_png = (folder / "a_good.png").read_bytes()
    (folder / "h_truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (folder / "i_text.png").write_text("this is a text file named .png")
    (folder / "j_notes.txt").write_text("not an image")
    bad_syntax = write(folder / "k_bad_syntax.dcm", dataset(gray, "MONOCHROME2", 8))
    bad_syntax.write_bytes(bad_syntax.read_bytes().replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.5.1.4\x00"))
    return folder


@pytest.mark.slow
def test_every_file_has_its_row(trained_demo_run, tmp_path, capsys):
    from helpers.__main__ import main

    folder = _folder(tmp_path)
    table = predict_images(
        trained_demo_run.best_checkpoint, [folder], tmp_path / "out", device="cpu", threshold=-1.0, rle=True
    )
    rows = table.set_index(table["input"].str.split("/").str[-1])
    assert list(rows.index) == sorted(p.name for p in folder.iterdir())
    assert rows["status"].to_dict() == {
        "a_good.png": PREDICTED,
        "b_good.jpg": PREDICTED,
        "c_ct.dcm": PREDICTED,
        "d_lateral.dcm": PREDICTED,
        "e_no_preamble": PREDICTED,
        "f_tiny.png": PREDICTED,
        "g_zero_bytes.png": ERROR,
        "h_truncated.png": ERROR,
        "i_text.png": ERROR,
        "j_notes.txt": SKIPPED,
        "k_bad_syntax.dcm": ERROR,
    }
    for name in ("g_zero_bytes.png", "h_truncated.png", "i_text.png", "k_bad_syntax.dcm"):
        assert str(folder / name) in rows.loc[name, "error"]
    assert "not a transfer syntax" in rows.loc["k_bad_syntax.dcm", "error"]
    assert rows.loc["a_good.png", "warnings"] == "" and rows.loc["e_no_preamble", "warnings"] == ""
    assert "modality CT" in rows.loc["c_ct.dcm", "warnings"] and "body part ABDOMEN" in rows.loc["c_ct.dcm", "warnings"]
    assert rows.loc["d_lateral.dcm", "warnings"] == "view position LL, not frontal (PA/AP)"
    assert rows.loc["f_tiny.png", "warnings"].startswith("small image 80x100")
    assert rows.loc["e_no_preamble", "area_cm2"] == pytest.approx(300 * 280 * 0.04 / 100)  # every pixel called
    assert rows.loc["e_no_preamble", "rle"] == f"0 {300 * 280}"
    saved = pd.read_csv(tmp_path / "out" / PREDICTIONS_FILE, keep_default_na=False)
    assert len(saved) == 11 and saved["status"].tolist() == table["status"].tolist()
    assert "11 files: 6 predicted (3 with warnings), 4 errors, 1 skipped: not an image" in capsys.readouterr().out

    strict = predict_images(trained_demo_run.best_checkpoint, [folder], tmp_path / "strict", device="cpu", strict=True)
    strict = strict.set_index(strict["input"].str.split("/").str[-1])
    assert set(strict.index[strict["status"] == REFUSED]) == {"c_ct.dcm", "d_lateral.dcm", "f_tiny.png"}
    assert "refused" in strict.loc["c_ct.dcm", "error"] and str(folder / "c_ct.dcm") in strict.loc["c_ct.dcm", "error"]
    assert not (tmp_path / "strict" / "c_ct_mask.png").exists() and (tmp_path / "strict" / "a_good_mask.png").exists()

    # issue 19's batch through the command line: two good images, a zero-byte PNG, a truncated PNG and a
    # text file named .png: two results, three named errors, exit code 1, the table complete
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("a_good.png", "b_good.jpg", "g_zero_bytes.png", "h_truncated.png", "i_text.png"):
        (batch / name).write_bytes((folder / name).read_bytes())
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main(
            [
                "predict",
                "--checkpoint",
                str(trained_demo_run.best_checkpoint),
                "--out-dir",
                str(tmp_path / "cli"),
                "--device",
                "cpu",
                str(batch),
            ]
        )
    assert caught.value.code == 1
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.err.splitlines() if line.startswith("FAILED")] == [
        f"FAILED {batch / name}" for name in ("g_zero_bytes.png", "h_truncated.png", "i_text.png")
    ]
    assert "5 files: 2 predicted (0 with warnings), 3 errors" in captured.out
    saved = pd.read_csv(tmp_path / "cli" / PREDICTIONS_FILE, keep_default_na=False)
    assert saved["status"].tolist() == [PREDICTED, PREDICTED, ERROR, ERROR, ERROR]
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(
        ["a_good_mask.png", "a_good_overlay.png", "b_good_mask.png", "b_good_overlay.png", PREDICTIONS_FILE]
    )


@pytest.mark.slow
def test_a_full_disk_leaves_the_table_and_no_orphans(trained_demo_run, tmp_path, monkeypatch):
    import helpers.predict as predict

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(folder / f"{name}.png"), generated_gray(64, 64))
    real_write, calls = predict.write_png, []

    def disk_fills_up(path, image, *args):
        calls.append(path)
        if len(calls) >= 4:  # a's mask and overlay, b's mask, then b's overlay finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, image, *args)

    monkeypatch.setattr(predict, "write_png", disk_fills_up)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        predict_images(trained_demo_run.best_checkpoint, [folder], out, device="cpu", batch_size=1)
    table = pd.read_csv(out / PREDICTIONS_FILE, keep_default_na=False)
    assert table["status"].tolist() == [PREDICTED, NOT_DONE, NOT_DONE]
    assert "No space left" in table.loc[1, "error"] and str(folder / "b.png") in table.loc[1, "error"]
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png", PREDICTIONS_FILE]

    def table_fails_too(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    calls.clear()
    monkeypatch.setattr(predict, "atomic_write_text", table_fails_too)
    with pytest.raises(OSError):
        predict_images(trained_demo_run.best_checkpoint, [folder], tmp_path / "none", device="cpu", batch_size=1)
    assert not list((tmp_path / "none").glob("*.png"))  # nothing rather than orphans


def test_read_input_names_the_file_whatever_fails(tmp_path):
    """Zero bytes, a cut PNG, text named .png, a cut DICOM: each a ValueError naming its file (no model needed)."""
    from helpers.predict import input_kind, read_input

    folder = _folder(tmp_path)
    cut = write(folder / "l_cut.dcm", dataset(generated_gray(), "MONOCHROME2", 8))
    cut.write_bytes(cut.read_bytes()[:700])
    for name in ("g_zero_bytes.png", "h_truncated.png", "i_text.png", "k_bad_syntax.dcm", "l_cut.dcm", "missing.png"):
        path = folder / name
        with pytest.raises(ValueError, match=str(path)):
            read_input(path, input_kind(path))
    assert input_kind(folder / "j_notes.txt") == "other" and input_kind(folder / "e_no_preamble") == "dicom"
    png_named_oddly = folder / "m_png_without_suffix"
    png_named_oddly.write_bytes((folder / "a_good.png").read_bytes())
    assert input_kind(png_named_oddly) == "image"
