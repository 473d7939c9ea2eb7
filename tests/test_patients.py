"""helpers.data.patients: the shipped patient table, patient-aware splits, the leakage report, seen / unseen.

The full-CSV tests read the real Kaggle CSVs from ../shared (skipped when absent) and check the shipped
table against the counts measured independently with ../shared/patients (the issue's and FACTS.md's).
"""

from __future__ import annotations

import csv
import gzip
import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core.metrics import summary_metrics
from helpers.data import patients
from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset
from helpers.data.prepare import assign_splits, prepare_dataset
from helpers.data.rawdata import CSV_FILES, read_index, read_listed
from helpers.evaluation import seen_unseen
from tests.conftest import REAL_SAMPLE, random_pixel_counts

KAGGLE = "siim-acr-pneumothorax"
SHARED_PATIENTS = REAL_SAMPLE.parent / "patients" / "siim_to_nih.csv"
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def full_csvs():
    """The folder with the two full Kaggle CSVs (12,047 rows); skipped when ../shared is absent."""
    folder = REAL_SAMPLE / KAGGLE
    if not all((folder / name).is_file() for name in CSV_FILES.values()):
        pytest.skip("../shared/realdata-sample is not here (it is not part of a user's clone)")
    return folder


@pytest.fixture(scope="module")
def listed(full_csvs) -> pd.DataFrame:
    return read_listed(full_csvs)


def _csv_image_ids(folder) -> list[tuple[str, str, int]]:
    """(stage, ImageId, has_pneumo) of every CSV row, read with the csv module."""
    rows = []
    for stage, name in CSV_FILES.items():
        with open(folder / name, newline="") as handle:
            rows.extend((stage, row["ImageId"], int(row["has_pneumo"])) for row in csv.DictReader(handle))
    return rows


def _shipped_rows() -> dict[str, tuple[str, int]]:
    """ImageId -> (patient, follow_up) read from the shipped file with gzip and csv, not pandas."""
    with gzip.open(patients.SHIPPED_TABLE, "rt", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return {r["image_id"]: (r["patient"], int(r["follow_up"])) for r in csv.DictReader(lines)}


def _patient_sides(table: pd.DataFrame) -> dict[str, set[str]]:
    """patient -> the splits holding their images."""
    return table.groupby("patient")["split"].agg(set).to_dict()


def test_shipped_table_states_its_source_and_ships_as_package_data():
    with gzip.open(patients.SHIPPED_TABLE, "rt") as handle:
        first = handle.readline()
    assert first.startswith("#") and patients.TABLE_SOURCE in first
    note = (patients.SHIPPED_TABLE.parent / "README.md").read_text()
    assert "earhian/SIIM-ACR-Pneumothorax-Segmentation-5th" in note and "input/nih_id.csv" in note
    pyproject = (patients.SHIPPED_TABLE.parents[3] / "pyproject.toml").read_text()
    assert "resources/patients.csv.gz" in pyproject


def test_shipped_table_covers_the_full_csvs_and_gives_the_measured_counts(full_csvs):
    rows = _csv_image_ids(full_csvs)
    shipped = _shipped_rows()
    assert len(rows) == 12047 and len(shipped) == 12047
    assert {image_id for _, image_id, _ in rows} == set(shipped)
    patient_of = {image_id: shipped[image_id][0] for _, image_id, _ in rows}
    per_patient: dict[str, list[int]] = {}
    for _, image_id, flag in rows:
        per_patient.setdefault(patient_of[image_id], []).append(flag)
    sizes = [len(flags) for flags in per_patient.values()]
    assert len(per_patient) == 6171
    assert sum(s > 1 for s in sizes) == 1952 and sum(s for s in sizes if s > 1) == 7828 and max(sizes) == 61
    assert sum(0 < sum(flags) < len(flags) for flags in per_patient.values()) == 600
    train_patients = {patient_of[i] for stage, i, _ in rows if stage == "train"}
    test_rows = [(patient_of[i], flag) for stage, i, flag in rows if stage == "test"]
    assert len({p for p, _ in test_rows} & train_patients) == 662
    assert sum(p in train_patients for p, _ in test_rows) == 884
    assert sum(flag for p, flag in test_rows if p in train_patients) == 277


def test_shipped_table_is_the_source_table_unchanged():
    if not SHARED_PATIENTS.is_file():
        pytest.skip("../shared/patients is not here (it is not part of a user's clone)")
    shipped = _shipped_rows()
    with open(SHARED_PATIENTS, newline="") as handle:
        source = {row["Kaggle_ID"]: row["NIH_ID"] for row in csv.DictReader(handle)}
    assert {i: f"{p}_{f:03d}.png" for i, (p, f) in shipped.items()} == source


def test_project_functions_reproduce_the_counts_from_the_two_csvs(listed):
    summary = patients.patient_summary(listed)
    assert summary == {
        "images": 12047,
        "patients": 6171,
        "patients_with_several_images": 1952,
        "images_of_patients_with_several_images": 7828,
        "most_images_of_one_patient": 61,
        "patients_with_mixed_labels": 600,
    }
    report = patients.leakage_report(assign_splits(listed, "official"))
    official_test = report["held_out"]["test"]
    assert official_test["against"] == ["train", "val"]
    assert (official_test["shared_patients"], official_test["images_of_shared_patients"], official_test["images"]) == (
        662,
        884,
        1372,
    )
    assert (official_test["positive_of_shared_patients"], official_test["positive"]) == (277, 290)
    [same] = report["same_image_across_splits"]
    assert [entry.split("/", 1)[1] for entry in same] == ["1129_test_0_.png", "10633_train_0_.png"]


def test_patient_split_on_the_full_csvs(listed):
    table = assign_splits(listed, "patient", val_fraction=0.2, seed=0, test_fraction=0.11)
    sides = _patient_sides(table)
    assert all(len(s) == 1 for s in sides.values())
    report = patients.leakage_report(table)
    assert all(entry["shared_patients"] == 0 for entry in report["pairs"])
    assert all(entry["images_of_shared_patients"] == 0 for entry in report["held_out"].values())
    assert report["same_image_across_splits"] == []
    counts = table["split"].value_counts()
    assert abs(counts["test"] - 0.11 * 12047) <= 10
    assert abs(counts["val"] - 0.2 * (12047 - counts["test"])) <= 10
    overall = listed["has_pneumo"].mean()
    for split in SPLITS:
        assert abs(table.loc[table["split"] == split, "has_pneumo"].mean() - overall) < 0.005, split
    again = assign_splits(listed, "patient", val_fraction=0.2, seed=0, test_fraction=0.11)
    pd.testing.assert_frame_equal(table, again)
    other = assign_splits(listed, "patient", val_fraction=0.2, seed=1, test_fraction=0.11)
    assert not other["split"].equals(table["split"])


def test_official_val_shares_no_patient_with_train(listed):
    table = assign_splits(listed, "official", val_fraction=0.2, seed=0)
    assert (table["split"] == "test").sum() == 1372
    assert table.loc[table["split"] == "test", "stage"].eq("test").all()
    train, val = (set(table.loc[table["split"] == s, "patient"]) for s in ("train", "val"))
    assert not train & val
    assert abs(len(table[table["split"] == "val"]) - 0.2 * 10675) <= 10
    report = patients.leakage_report(table)
    assert report["held_out"]["val"]["shared_patients"] == 0


@pytest.mark.parametrize("mode", ["patient", "official", "seed"])
def test_folds_group_by_patient_in_every_mode(listed, mode):
    table = assign_splits(listed, mode, folds=5, seed=0)
    pool = table[table["split"] != "test"]
    assert pool["fold"].between(0, 4).all() and (table.loc[table["split"] == "test", "fold"] == -1).all()
    assert pool.groupby("patient")["fold"].nunique().max() == 1
    overall = pool["has_pneumo"].mean()
    for _, rows in pool.groupby("fold"):
        assert abs(rows["has_pneumo"].mean() - overall) < 0.02
        assert abs(len(rows) - len(pool) / 5) < 0.02 * len(pool)


def test_patient_split_of_the_demo_data(demo_raw_dir):
    pairs = read_index(demo_raw_dir).pairs
    assert pairs.groupby("patient").size().max() > 1  # the demo has patients with several images
    table = assign_splits(pairs, "patient", val_fraction=0.2, seed=0, test_fraction=0.2)
    assert all(len(s) == 1 for s in _patient_sides(table).values())
    overall = pairs["has_pneumo"].mean()
    for split in SPLITS:
        rows = table[table["split"] == split]
        assert len(rows) and abs(rows["has_pneumo"].mean() - overall) < 0.1, split
    assert abs((table["split"] == "test").sum() - 0.2 * len(pairs)) <= 6
    pd.testing.assert_frame_equal(table, assign_splits(pairs, "patient", val_fraction=0.2, seed=0, test_fraction=0.2))
    official = patients.leakage_report(assign_splits(pairs, "official"))
    assert official["held_out"]["test"]["shared_patients"] > 0  # the demo's official split leaks, like the real one


def test_demo_writes_its_patient_table_with_same_side_lesions(demo_raw_dir):
    folder = demo_raw_dir / KAGGLE
    table = patients.read_patient_table(folder / patients.PATIENTS_FILE)
    rows = _csv_image_ids(folder)
    assert set(table["image_id"]) == {image_id for _, image_id, _ in rows}
    assert patients.table_path(folder) == folder / patients.PATIENTS_FILE
    pairs = read_index(demo_raw_dir).pairs
    several = pairs.groupby("patient").filter(lambda g: len(g) > 1)
    assert several["patient"].nunique() >= 5 and len(several) > len(pairs) / 2
    sides = {}
    for patient, group in pairs[pairs["has_pneumo"] == 1].groupby("patient"):
        sides[patient] = set()
        for mask_path in group["mask_path"]:
            mask = np.asarray(Image.open(mask_path)) > 0
            sides[patient].add(bool(np.nonzero(mask)[1].mean() > mask.shape[1] / 2))
    assert all(len(s) == 1 for s in sides.values())
    assert sum(len(g) > 1 for _, g in pairs[pairs["has_pneumo"] == 1].groupby("patient")) >= 1


def test_demo_with_one_image_per_patient(tmp_path):
    generate_demo_dataset(tmp_path, DemoSpec(n_train=6, n_test=2, size=32, max_images_per_patient=1), workers=1)
    pairs = read_index(tmp_path).pairs
    assert pairs["patient"].nunique() == 8


def test_unknown_images_are_their_own_patients_with_a_counted_warning(demo_raw_dir, tmp_path, caplog):
    table = patients.read_patient_table(demo_raw_dir / KAGGLE / patients.PATIENTS_FILE)
    partial = tmp_path / "partial.csv.gz"
    patients.write_patient_table(table.iloc[3:], partial, "test: the first three rows left out")
    with caplog.at_level(logging.WARNING, logger="helpers.data.patients"):
        pairs = read_index(demo_raw_dir, patient_table=partial).pairs
    assert "3 of 100 images are not in" in caplog.text
    unknown = pairs[~pairs["image_id"].isin(set(table["image_id"].iloc[3:]))]
    assert len(unknown) == 3 and unknown["patient"].str.startswith(patients.UNKNOWN_PATIENT_PREFIX).all()
    assert unknown["patient"].nunique() == 3 and (unknown["follow_up"] == -1).all()


@pytest.mark.parametrize(
    "content, problem",
    [
        ("image_id,patient\n1,2\n", "columns are"),
        ("image_id,patient,follow_up\n1,00000001,0\n1,00000002,0\n", "listed more than once"),
        ("image_id,patient,follow_up\n1,00000001,x\n", "follow_up must be an integer"),
    ],
)
def test_bad_patient_table_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as error:
        patients.read_patient_table(path)
    assert str(path) in str(error.value)


def test_prepare_patient_mode_reruns_write_nothing_and_modes_write_elsewhere(demo_raw_dir, tmp_path):
    def snapshot(folder):
        return {
            str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    first = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, split_mode="patient", test_fraction=0.2, workers=1)
    assert first.out_dir == tmp_path / "patient-32" and first.written == 100
    before = snapshot(tmp_path)
    again = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, split_mode="patient", test_fraction=0.2, workers=1)
    assert again.written == 0 and snapshot(tmp_path) == before
    leakage = first.manifest["leakage"]
    assert all(entry["shared_patients"] == 0 for entry in leakage["pairs"])
    assert first.manifest["parameters"]["split_mode"] == "patient"
    labels = pd.read_csv(first.out_dir / "labels.csv", dtype={"patient": str})
    assert labels.groupby("patient")["split"].nunique().max() == 1

    official = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, split_mode="official", workers=1)
    assert official.out_dir == tmp_path / "official-32" and official.written == 100
    assert {k: v for k, v in snapshot(tmp_path).items() if k.startswith("patient-32/")} == before
    assert official.manifest["leakage"]["held_out"]["test"]["shared_patients"] > 0


def test_seen_unseen_breakdown_adds_up_to_the_whole():
    n = 40
    counts = random_pixel_counts(np.random.default_rng(0), n)
    groups = pd.DataFrame({"patient": [f"p{i // 3}" for i in range(n)], "seen": [(i // 3) % 2 == 0 for i in range(n)]})
    breakdown = seen_unseen.seen_unseen_metrics(counts, None, groups, n_boot=50)
    seen, unseen = breakdown["seen"], breakdown["unseen"]
    assert seen["images"] + unseen["images"] == n
    assert seen["patients"] + unseen["patients"] == groups["patient"].nunique()
    assert np.array_equal(np.add(seen["counts"], unseen["counts"]), counts.sum(axis=0))
    whole = summary_metrics(counts)
    pooled_from_groups = np.add(seen["counts"], unseen["counts"])[None]
    assert summary_metrics(pooled_from_groups)["fg_dice"] == pytest.approx(whole["fg_dice"])
    weighted = (seen["images"] * seen["metrics"]["image_dice"] + unseen["images"] * unseen["metrics"]["image_dice"]) / n
    assert weighted == pytest.approx(whole["image_dice"])
    for entry in (seen, unseen):
        low, high = entry["ci"]["image_dice"]
        assert low <= entry["metrics"]["image_dice"] <= high
    empty = seen_unseen.seen_unseen_metrics(counts, None, groups.assign(seen=False), n_boot=10)
    assert empty["seen"]["images"] == 0 and empty["seen"]["metrics"] is None and empty["unseen"]["images"] == n


def test_leakage_table_keeps_counts_as_integers():
    labels = pd.DataFrame(
        {
            "name": list("abcdef"),
            "split": ["train", "train", "val", "test", "test", "test"],
            "patient": ["1", "2", "2", "1", "2", "3"],
            "has_pneumo": [1, 0, 0, 1, 1, 0],
        }
    )
    report = patients.leakage_report(labels)
    table = patients.leakage_table(report)
    counts = [c for c in table.columns if c not in ("split", "against")]
    assert all(str(table[c].dtype) == "Int64" for c in counts)
    test = table[(table["split"] == "test") & (table["against"] == "train + val")].iloc[0]
    assert (test["shared patients"], test["images of shared patients"], test["positive of shared patients"]) == (
        2,
        2,
        2,
    )
    train_test = table[(table["split"] == "test") & (table["against"] == "train")].iloc[0]
    assert train_test["shared patients"] == 2 and pd.isna(train_test["images"])
    assert ".000000" not in table.style.format(na_rep="–").to_html()


def test_a_relative_patient_table_is_read_from_the_repository_root():
    assert patients.table_path(None, "helpers/data/resources/patients.csv.gz") == patients.SHIPPED_TABLE


def test_evaluation_patients_marks_patients_of_the_train_split():
    labels = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e"],
            "split": ["train", "train", "test", "test", "val"],
            "patient": ["1", "2", "2", "3", "3"],
        }
    )
    groups = patients.evaluation_patients(labels, "test", ["d", "c"])
    assert groups.to_dict("list") == {"name": ["d", "c"], "patient": ["3", "2"], "seen": [False, True]}
    with pytest.raises(ValueError, match="not in the prepared test split"):
        patients.evaluation_patients(labels, "test", ["a"])
    with pytest.raises(ValueError, match="re-run 02_prepare"):
        patients.evaluation_patients(labels.drop(columns="patient"), "test", ["d"])


def test_explore_reports_patients_from_the_csvs(demo_raw_dir, tmp_path):
    from helpers.data.explore import explore_dataset
    from helpers.plots import plot_images_per_patient

    result = explore_dataset(demo_raw_dir, stages=["test"], max_images=5, workers=1, out_dir=tmp_path)
    folder = demo_raw_dir / KAGGLE
    patient_of = dict(
        zip(
            *patients.read_patient_table(folder / patients.PATIENTS_FILE)[["image_id", "patient"]].T.to_numpy(),
            strict=True,
        )
    )
    rows = _csv_image_ids(folder)  # every CSV row, whatever the stages or the sample
    flags: dict[str, list[int]] = {}
    for _, image_id, flag in rows:
        flags.setdefault(patient_of[image_id], []).append(flag)
    assert result.patient_summary["patients"] == len(flags)
    assert result.patient_summary["patients_with_mixed_labels"] == sum(0 < sum(f) < len(f) for f in flags.values())
    sizes = pd.Series([len(f) for f in flags.values()]).value_counts().sort_index()
    assert result.images_per_patient.set_index("images")["patients"].to_dict() == sizes.to_dict()
    train = {patient_of[i] for stage, i, _ in rows if stage == "train"}
    test = [patient_of[i] for stage, i, _ in rows if stage == "test"]
    overlap = result.official_overlap["held_out"]["test"]
    assert (overlap["shared_patients"], overlap["images_of_shared_patients"]) == (
        len(set(test) & train),
        sum(p in train for p in test),
    )
    saved = json.loads(result.stats_path.read_text())["patients"]
    assert saved["patients"] == len(flags) and saved["official_overlap"]["held_out"]["test"] == overlap
    figure = plot_images_per_patient(result.images_per_patient)
    assert [bar.get_height() for bar in figure.axes[0].patches] == sizes.tolist()
