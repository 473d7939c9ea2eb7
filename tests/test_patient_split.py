"""The shipped benchmark split patient-v1 (helpers.data.patient_split): the file is what today's code makes from the
full Kaggle CSVs, patient-disjoint with the documented counts, and 02_prepare takes its rows, for a full or a partial
download, only when asked for that split.

The rebuild reads the real CSVs from ../shared (skipped when absent); the partial download is built here from the
shipped file's own rows (generated pictures under real file names), so it runs everywhere.
"""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.__main__ import main
from helpers.core import paths
from helpers.core.parameters import defaults
from helpers.data import patient_split, patients
from helpers.data.demo_dataset import draw_radiograph
from helpers.data.prepare import build_patient_split, prepare_dataset, split_pairs
from helpers.data.rawdata import CSV_COLUMNS, CSV_FILES, IMAGES_FOLDER, MASKS_FOLDER, read_listed
from tests.conftest import REAL_SAMPLE

COUNTS = {"train": (8577, 4395, 1900), "val": (2144, 1097, 475), "test": (1326, 679, 294)}  # images, patients, pos.


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    return patient_split.read_split()


@pytest.fixture(scope="module")
def full_csvs():
    """The folder with the two full Kaggle CSVs (12,047 rows); skipped when ../shared is absent."""
    folder = REAL_SAMPLE / paths.KAGGLE_FOLDER
    if not all((folder / name).is_file() for name in CSV_FILES.values()):
        pytest.skip("../shared/realdata-sample is not here (it is not part of a user's clone)")
    return folder


def test_the_split_file_ships_as_package_data_with_its_hash():
    assert patient_split.file_sha256(patient_split.SHIPPED_FILE) == patient_split.SHA256
    assert (paths.REPO_ROOT / patient_split.PACKAGE_PATH) == patient_split.SHIPPED_FILE
    assert f"resources/{patient_split.FILE_NAME}" in (paths.REPO_ROOT / "pyproject.toml").read_text()
    attributes = (paths.REPO_ROOT / ".gitattributes").read_text()
    assert "helpers/data/resources/split-*.csv -text" in attributes  # no line-end conversion: the hash holds
    for note in (paths.REPO_ROOT / "docs" / "data.md", patient_split.SHIPPED_FILE.parent / "README.md"):
        text = note.read_text()
        assert patient_split.VERSION in text and patient_split.SHA256 in text, note


def test_the_shipped_split_is_patient_disjoint_with_the_documented_counts(shipped):
    assert len(shipped) == 12047 and shipped["new_filename"].is_unique
    for split, (images, patient_count, positive) in COUNTS.items():
        rows = shipped[shipped["split"] == split]
        assert (len(rows), rows["patient"].nunique(), int(rows["has_pneumo"].sum())) == (
            images,
            patient_count,
            positive,
        )
    assert shipped.groupby("patient")["split"].nunique().max() == 1
    assert (shipped["fold"] == -1).equals(shipped["split"] == "test")
    pool = shipped[shipped["split"] != "test"]
    assert sorted(pool["fold"].unique()) == list(range(patient_split.FOLDS))
    assert pool.groupby("patient")["fold"].nunique().max() == 1
    table = patients.read_patient_table().set_index("image_id")
    assert (table.loc[shipped["ImageId"], "patient"].to_numpy() == shipped["patient"].to_numpy()).all()
    names = shipped["new_filename"].str.extract(r"^(\d+)_(train|test)_([01])_\.png$")
    assert names.notna().all().all() and (names[2].astype(int) == shipped["has_pneumo"]).all()
    stage_order = names[1].map({"train": 0, "test": 1}) * 100_000 + names[0].astype(int)
    assert stage_order.is_monotonic_increasing  # the Kaggle CSVs' order: stage_1_train, then stage_1_test


def test_its_parameters_are_02_prepares_defaults():
    declared = defaults("02_prepare")
    assert declared["split_mode"] == "patient"
    assert {k: declared[k] for k in patient_split.PARAMETERS} == patient_split.PARAMETERS
    yaml_text = (paths.PIPELINE_PARAMS_DIR / "02_prepare.yaml").read_text()
    for key, value in patient_split.PARAMETERS.items():
        assert re.search(rf"^{key}: {value}$", yaml_text, re.MULTILINE), key


def test_a_changed_split_file_is_refused(tmp_path):
    changed = tmp_path / patient_split.FILE_NAME
    changed.write_bytes(patient_split.SHIPPED_FILE.read_bytes().replace(b",val,", b",train,", 1))
    with pytest.raises(patient_split.SplitFileError, match="was changed") as error:
        patient_split.read_split(changed)
    assert str(changed) in str(error.value)


@pytest.mark.realdata
def test_the_split_rebuilt_from_the_csvs_with_todays_code_is_the_shipped_file(full_csvs, shipped, tmp_path):
    rebuilt = build_patient_split(full_csvs)
    pd.testing.assert_frame_equal(rebuilt, shipped)
    out = tmp_path / "rebuilt.csv"
    assert patient_split.write_split(rebuilt, out) == patient_split.SHA256
    assert out.read_bytes() == patient_split.SHIPPED_FILE.read_bytes()


@pytest.mark.realdata
def test_the_command_rebuilds_and_compares(full_csvs, tmp_path, capsys):
    main(["patient-split", "--csvs", str(full_csvs), "--out", str(tmp_path / "split.csv")])
    assert f"equal to the shipped {patient_split.VERSION}" in capsys.readouterr().out
    assert patient_split.file_sha256(tmp_path / "split.csv") == patient_split.SHA256
    main(["patient-split"])
    shown = capsys.readouterr().out
    assert patient_split.SHA256 in shown and re.search(r"test\s+1326\s+679\s+294", shown)


@pytest.mark.realdata
def test_patient_mode_on_the_full_csvs_takes_the_shipped_split_and_says_so(full_csvs, shipped):
    listed = read_listed(full_csvs)
    by_name = shipped.set_index("new_filename")
    table, source = split_pairs(listed, "patient", folds=5)
    assert (source["version"], source["sha256"], source["folds"]) == ("patient-v1", patient_split.SHA256, "shipped")
    assert source["message"] == "patient split: the shipped patient-v1 (all 12047 images)"
    assert (table["split"].to_numpy() == by_name.loc[table["name"], "split"].to_numpy()).all()
    assert (table["fold"].to_numpy() == by_name.loc[table["name"], "fold"].to_numpy()).all()
    no_folds, _ = split_pairs(listed, "patient")
    assert no_folds["split"].equals(table["split"]) and (no_folds["fold"] == -1).all()
    for changed, said in (({"seed": 1}, "seed 1 (patient-v1: 0)"), ({"test_fraction": 0.2}, "test_fraction 0.2")):
        fresh, other = split_pairs(listed, "patient", **changed)
        assert (
            other["version"] is None and "not the shipped patient-v1" in other["message"] and said in other["message"]
        )
        assert not fresh["split"].equals(table["split"])
        assert fresh.groupby("patient")["split"].nunique().max() == 1
    _, official = split_pairs(listed, "official")
    assert official["version"] is None


# --- a partial download, built from the shipped file's own rows ----------------------------------------------


def _partial_download(root, shipped: pd.DataFrame, names: list[str]):
    """A raw folder in the Kaggle layout: both full CSVs (every row of the shipped file, in the Kaggle columns) and
    generated 64x64 pairs for ``names`` only, as after an interrupted download."""
    folder = root / paths.KAGGLE_FOLDER
    (folder / IMAGES_FOLDER).mkdir(parents=True)
    (folder / MASKS_FOLDER).mkdir()
    stage = shipped["new_filename"].str.split("_").str[1]
    for key, filename in CSV_FILES.items():
        shipped.loc[stage == key, CSV_COLUMNS].to_csv(folder / filename, index=False)
    flags = shipped.set_index("new_filename")["has_pneumo"]
    for i, name in enumerate(names):
        image, mask = draw_radiograph(64, bool(flags[name]), np.random.default_rng(i))
        assert bool(mask.any()) == bool(flags[name])
        cv2.imwrite(str(folder / IMAGES_FOLDER / name), image)
        cv2.imwrite(str(folder / MASKS_FOLDER / name), mask)
    return folder


def _some_names(shipped: pd.DataFrame) -> list[str]:
    """Images of every split and of both stages, and every image of two patients with several."""
    rng = np.random.default_rng(0)
    chosen = [
        name
        for split in ("train", "val", "test")
        for name in rng.choice(shipped.loc[shipped["split"] == split, "new_filename"], 6, replace=False)
    ]
    sizes = shipped.groupby("patient").size()
    several = sizes[(sizes >= 3) & (sizes <= 5)].index[:2]
    chosen += list(shipped.loc[shipped["patient"].isin(several), "new_filename"])
    return sorted(set(chosen))


def test_a_partial_download_keeps_every_images_shipped_split(shipped, tmp_path):
    names = _some_names(shipped)
    raw = _partial_download(tmp_path / "raw", shipped, names)
    by_name = shipped.set_index("new_filename")
    expected = by_name.loc[names]
    assert expected["split"].nunique() == 3 and len(names) >= 20

    result = prepare_dataset(raw, tmp_path / "prepared", img_size=16, split_mode="patient", folds=5, workers=1)
    source = result.manifest["split_source"]
    assert (source["version"], source["sha256"], source["file"]) == (
        "patient-v1",
        patient_split.SHA256,
        patient_split.PACKAGE_PATH,
    )
    assert f"the {len(names)} images present of its 12047: a partial download" in source["message"]
    labels = result.labels.set_index("name")
    assert len(labels) == len(names)
    stems = [n.removesuffix(".png") for n in names]
    assert labels.loc[stems, "split"].tolist() == expected["split"].tolist()
    assert labels.loc[stems, "fold"].tolist() == expected["fold"].tolist()
    for stem, split in zip(stems, expected["split"], strict=True):
        assert (result.out_dir / "images" / split / f"{stem}.png").is_file()
        assert f"{split}/{stem}\n" in (result.out_dir / f"{split}.txt").read_text()
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["split_source"] == source and manifest["csv_rows_without_files"] == 12047 - len(names)

    three = prepare_dataset(raw, tmp_path / "prepared", img_size=16, split_mode="patient", folds=3, workers=1)
    assert three.labels["split"].tolist() == result.labels["split"].tolist()
    assert (
        three.manifest["split_source"]["folds"] == "computed"
        and "its 3 folds computed" in (three.manifest["split_source"]["message"])
    )
    assert three.labels.loc[three.labels["split"] != "test", "fold"].between(0, 2).all()

    other = prepare_dataset(raw, tmp_path / "prepared", img_size=16, split_mode="patient", seed=1, workers=1)
    said = other.manifest["split_source"]
    assert said["version"] is None and said["sha256"] is None
    assert said["message"] == "patient split computed, not the shipped patient-v1: seed 1 (patient-v1: 0)"
    assert other.labels.groupby("patient")["split"].nunique().max() == 1


def test_images_that_are_not_the_kaggle_datasets_get_a_computed_split(demo_raw_dir, tmp_path):
    result = prepare_dataset(demo_raw_dir, tmp_path, img_size=16, split_mode="patient", workers=1)
    source = result.manifest["split_source"]
    assert source["version"] is None
    assert re.fullmatch(
        r"patient split computed, not the shipped patient-v1: 100 of 100 images are not in patient-v1 \(first: .*\)",
        source["message"],
    )


def test_another_patient_for_an_image_gets_a_computed_split(shipped):
    pairs = shipped.head(40).rename(columns={"new_filename": "name", "ImageId": "image_id"})
    assert split_pairs(pairs, "patient")[1]["version"] == "patient-v1"
    moved = pairs.assign(patient=pairs["patient"].where(pairs.index != 3, "99999999"))
    table, source = split_pairs(moved, "patient")
    assert (
        source["version"] is None and "another patient" in source["message"] and pairs["name"][3] in source["message"]
    )


@pytest.mark.realdata
def test_prepare_on_the_real_sample_names_the_split_and_its_hash(real_sample_dir, tmp_path, capsys, shipped):
    out = tmp_path / "patient-32"
    main(["prepare", "-p", f"raw_root={real_sample_dir}", "-p", f"prepared_root={out}", "-p", "img_size=32"])
    shown = capsys.readouterr().out
    assert f"split: patient-v1, {patient_split.PACKAGE_PATH}, sha256 {patient_split.SHA256}" in shown
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_source"]["version"] == "patient-v1"
    labels = pd.read_csv(out / "labels.csv")
    expected = shipped.set_index("new_filename").loc[labels["name"] + ".png", "split"]
    assert len(labels) == 18 and labels["split"].tolist() == expected.tolist()
