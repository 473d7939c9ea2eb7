"""``python -m helpers {demo,pipeline,sweep,prepare,patient-split,predict,export,convert-siim,demo-data,download,
index}``: the command line."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import threading
from pathlib import Path

from helpers import __version__
from helpers.core import paths
from helpers.data.demo_spec import DemoSpec

INTERRUPTED = 130  # the shell's exit status after Ctrl-C
# helpers.postprocessing.tuned.CHOICES, typed here so that --help does not import pandas (tests/test_cli.py checks)
POSTPROCESS_CHOICES = ("winner", "triplet", "dual", "none")
MAX_PIXELS = 50_000_000  # helpers.predict.MAX_PIXELS (not imported here: --help stays light)


def _parse_value(text: str, source: str = "-p"):
    """``-p key=value`` values are YAML (numbers, booleans, lists, null), like papermill's ``-y``; ``2e4`` and
    ``3e-3`` are numbers (helpers.core.parameters.parse_yaml)."""
    from helpers.core.parameters import parse_yaml

    return parse_yaml(text, source)


def _key_values(pairs: list[str]) -> dict:
    result = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        result[key] = _parse_value(value, f"-p {key}")
    return result


# 03_train parameters that the sweep sets for each run itself: a -p of them would be overwritten in silence.
SWEEP_SETS = {
    "work_dir": "each run's folder is <outputs>/runs/<config>/lr<lr>/: choose the outputs with --outputs",
    "resume": "the sweep resumes an interrupted run by itself (--force retrains from scratch)",
}


def _force(given: list[str] | None) -> bool | list[str]:
    """``--force`` alone: every stage; ``--force 03_train 04_evaluate``: those; absent: none."""
    if given is None:
        return []
    return given or True


def cmd_demo(args: argparse.Namespace) -> None:
    from helpers.data.demo_dataset import generate_demo_dataset
    from helpers.workflow.pipeline import run_pipeline

    generate_demo_dataset(paths.DEMO_DIR)
    outputs = Path(args.outputs)
    run_pipeline(paths.DEMO_PARAMS_DIR, outputs, force=_force(args.force))
    print(f"\nDemo finished. Open {(outputs / 'index.html').resolve()}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    from helpers.core.parameters import STAGES
    from helpers.workflow.pipeline import run_pipeline

    stages = tuple(args.stages) if args.stages else STAGES
    run_pipeline(Path(args.params_dir), Path(args.outputs), stages=stages, force=_force(args.force))
    print(f"\nPipeline finished. Open {(Path(args.outputs) / 'index.html').resolve()}")


def cmd_sweep(args: argparse.Namespace) -> None:
    import pandas as pd

    from helpers.core.parameters import LR, ParameterError, check_names, check_parameters, check_value
    from helpers.workflow.parameter_files import SWEEP_KEY, stage_parameters
    from helpers.workflow.slurm import write_sbatch
    from helpers.workflow.sweep import SEED_LRS, sweep

    parameters = {} if args.no_yaml else stage_parameters("03_train", Path(args.params_dir))
    given = _key_values(args.param)
    check_names("03_train", given, "-p")
    for name, why in SWEEP_SETS.items():
        if name in given:
            raise ParameterError(f"-p {name}: the sweep sets it for every run ({why})")
    if "lr" in given and args.lrs:
        raise ParameterError(f"-p lr={given['lr']!r} and --lrs {' '.join(map(str, args.lrs))}: give the lrs once")
    if "fold" in given and args.folds:
        raise ParameterError("-p fold and --folds: with --folds K the sweep runs every fold (one alone: --fold k)")
    if "lr" in given:  # -p lr=X alone: the sweep of that one lr, in place of the YAML's lrs
        check_value("03_train", "lr", given["lr"], LR)
        lrs = [given.pop("lr")]
    else:
        lrs = args.lrs or parameters.get(SWEEP_KEY) or list(SEED_LRS)
    parameters.pop(SWEEP_KEY, None)
    parameters.update(given)
    if args.config:
        parameters["config"] = args.config
    for lr in lrs:
        check_value("03_train", "lr", lr, LR)
    check_parameters("03_train", parameters, source="the sweep's parameters (-p and 03_train.yaml)", paths_exist=False)
    if args.sbatch:
        script = write_sbatch(
            lrs,
            parameters,
            args.sbatch,
            gpus=int(parameters.get("gpus", 1)),
            outputs=Path(args.outputs),
            folds=args.folds,
        )
        print(f"wrote {script}; submit with: sbatch {script}")
        return
    table = sweep(lrs, parameters, Path(args.outputs), folds=args.folds, force=args.force, only_fold=args.fold)
    print(table.drop(columns=["report", "error", "result_id"]).to_string(index=False))
    failed = table[~table["ok"]]
    for row in failed.itertuples():
        fold = "" if pd.isna(row.fold) else f" fold {row.fold:g}"
        print(f"FAILED lr {row.lr:g}{fold}: {row.error}\n  report: {row.report}", file=sys.stderr)
    if len(failed):
        raise SystemExit(1)


def cmd_prepare(args: argparse.Namespace) -> None:
    from helpers.core.parameters import PrepareParams, check_parameters
    from helpers.data.prepare import prepare

    result = prepare(PrepareParams(**check_parameters("02_prepare", _key_values(args.param), source="-p")))
    source = result.manifest["split_source"]  # its message is logged
    if source["version"]:
        print(f"split: {source['version']}, {source['file']}, sha256 {source['sha256']}")
    counts = ", ".join(
        f"{split} {c['images']} ({c['positive']} positive)" for split, c in result.manifest["counts"].items()
    )
    print(
        f"{result.out_dir}: {counts}; {result.written} pairs written, {result.skipped} already there, "
        f"{result.removed} stale files removed"
    )


def cmd_patient_split(args: argparse.Namespace) -> None:
    from helpers.data import patient_split
    from helpers.data.prepare import build_patient_split

    if args.csvs is None:
        table = patient_split.read_split()
        print(f"{patient_split.VERSION}: {patient_split.PACKAGE_PATH}, sha256 {patient_split.SHA256}")
        print(patient_split.describe(table).to_string(index=False))
        return
    rebuilt = build_patient_split(args.csvs, patient_table=args.patient_table)
    data = patient_split.split_file_bytes(rebuilt)
    digest = hashlib.sha256(data).hexdigest()
    print(patient_split.describe(rebuilt).to_string(index=False))
    if args.out:
        patient_split.write_split(rebuilt, args.out)
        print(f"wrote {args.out}, sha256 {digest}")
    if digest == patient_split.SHA256:
        print(f"rebuilt from {args.csvs}: equal to the shipped {patient_split.VERSION} (sha256 {digest})")
        return
    shipped = patient_split.read_split()
    merged = rebuilt.merge(shipped, on="new_filename", how="outer", suffixes=("", "_shipped"), indicator=True)
    differ = merged[
        (merged["_merge"] != "both")
        | (merged["split"] != merged["split_shipped"])
        | (merged["fold"] != merged["fold_shipped"])
        | (merged["patient"] != merged["patient_shipped"])
    ]
    print(
        f"rebuilt from {args.csvs}: NOT the shipped {patient_split.VERSION} (sha256 {digest}); "
        f"{len(differ)} rows differ (first: {', '.join(differ['new_filename'].head(5))})",
        file=sys.stderr,
    )
    raise SystemExit(1)


def cmd_predict(args: argparse.Namespace) -> None:
    import time

    from helpers.predict import ERROR, NOT_DONE, PREDICTIONS_FILE, REFUSED, NoInputsError, predict_images

    started = time.time()
    try:
        table = predict_images(
            args.checkpoint,
            args.images,
            args.out_dir,
            config=args.config,
            threshold=args.threshold,
            postprocess=args.postprocess,
            device=args.device,
            strict=args.strict,
            rle=args.rle,
            max_pixels=args.max_pixels or None,
        )
    except NoInputsError as err:
        raise SystemExit(f"predict: {err}") from None
    except OSError as err:  # a full disk, a folder that cannot be written: predictions.csv holds what was done
        table = Path(args.out_dir) / PREDICTIONS_FILE
        done = f"; {table} lists what was done" if table.is_file() and table.stat().st_mtime >= started else ""
        raise SystemExit(f"predict: {err}{done}") from None
    shown = table.drop(columns=[c for c in ("mask_path", "overlay_path", "error", "rle") if c in table.columns])
    print(shown.to_string(index=False))
    print(f"masks, overlays and {PREDICTIONS_FILE} in {Path(args.out_dir).resolve()}")
    failed = table[table["status"].isin([ERROR, REFUSED, NOT_DONE])]
    for row in failed.itertuples():
        print(f"FAILED {row.error}", file=sys.stderr)
    if len(failed):
        raise SystemExit(1)


def cmd_convert_siim(args: argparse.Namespace) -> None:
    from helpers.data.siim_convert import SiimError, convert_siim

    try:
        result = convert_siim(args.src, args.out, kaggle_csvs=args.kaggle_csvs, workers=args.workers)
    except SiimError as err:
        raise SystemExit(f"convert-siim: {err}") from None
    print(result.summary())
    for row in result.problems.head(20).itertuples():
        print(
            f"SKIPPED {row.problem}" if row.problem.startswith(str(row.path)) else f"SKIPPED {row.path}: {row.problem}",
            file=sys.stderr,
        )
    if len(result.problems) > 20:
        print(f"... and {len(result.problems) - 20} more in {result.report_path}", file=sys.stderr)
    if result.unreadable:
        raise SystemExit(1)


def cmd_export(args: argparse.Namespace) -> None:
    from helpers.modeling.export import export_onnx, sidecar_path

    out = export_onnx(args.checkpoint, args.out, config=args.config, postprocess=args.postprocess)
    print(f"wrote {out} and {sidecar_path(out)}")


def cmd_demo_data(args: argparse.Namespace) -> None:
    from helpers.data.demo_dataset import generate_demo_dataset

    spec = DemoSpec(n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed)
    print(generate_demo_dataset(Path(args.dest), spec))


def cmd_download(args: argparse.Namespace) -> None:
    from helpers.data.rawdata import download_dataset

    print(download_dataset(Path(args.dest)))


def cmd_index(args: argparse.Namespace) -> None:
    from helpers.workflow.index import write_index

    print(write_index(Path(args.outputs)))


# Shown under each subcommand's --help (tests/test_cli.py parses every one).
EXAMPLES = {
    "demo": ["python -m helpers demo", "python -m helpers demo --force 04_evaluate 05_visualize"],
    "pipeline": [
        "python -m helpers pipeline",
        "python -m helpers pipeline --stages 04_evaluate 05_visualize",
        "python -m helpers pipeline --force 03_train",
    ],
    "sweep": [
        "python -m helpers sweep",
        "python -m helpers sweep --lrs 0.01 0.001 -p max_iters=20000 -p gpus=4",
        "python -m helpers sweep --sbatch sweep.sbatch -p gpus=1 --folds 5",
    ],
    "prepare": [
        "python -m helpers prepare",
        "python -m helpers prepare -p raw_root=data/raw -p img_size=1024 -p split_mode=official",
    ],
    "patient-split": [
        "python -m helpers patient-split",
        "python -m helpers patient-split --csvs data/raw/siim-acr-pneumothorax --out rebuilt.csv",
    ],
    "predict": [
        "python -m helpers predict --checkpoint outputs/runs/CONFIG/lr0.01 scans/ --out-dir preds/",
        "python -m helpers predict --checkpoint model.onnx scan1.dcm scan2.png --postprocess none --rle",
    ],
    "export": ["python -m helpers export --checkpoint outputs/runs/CONFIG/lr0.01 --out model.onnx"],
    "convert-siim": [
        "python -m helpers convert-siim siim/ data/raw/siim-acr-pneumothorax --kaggle-csvs kaggle_csvs/",
    ],
    "demo-data": ["python -m helpers demo-data", "python -m helpers demo-data --n-train 80 --n-test 20 --size 128"],
    "download": ["python -m helpers download"],
    "index": ["python -m helpers index", "python -m helpers index --outputs outputs/demo"],
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (none for an option off or unset by default), the examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from helpers.core.parameters import STAGES

    parser = argparse.ArgumentParser(
        prog="python -m helpers",
        description=__doc__ + "\nAlso installed as the console script `pneumothorax`.",
        epilog="Each command's options, defaults and examples: python -m helpers COMMAND --help",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="generate the demo dataset and run the whole pipeline on it (CPU)")
    demo.add_argument("--outputs", default=str(paths.DEMO_OUTPUTS_DIR), help="where runs, evaluations and reports go")
    demo.add_argument(
        "--force",
        nargs="*",
        metavar="STAGE",
        choices=STAGES,
        help="rerun even what is up to date: every stage, or the stages named (e.g. --force 03_train)",
    )
    demo.set_defaults(func=cmd_demo)

    pipeline = sub.add_parser("pipeline", help="run the five notebooks with pipeline/*.yaml (full data, GPU)")
    pipeline.add_argument(
        "--params-dir", default=str(paths.PIPELINE_PARAMS_DIR), help="the folder of YAML files, one per stage"
    )
    pipeline.add_argument("--outputs", default=str(paths.OUTPUTS_DIR), help="where runs, evaluations and reports go")
    pipeline.add_argument("--stages", nargs="*", help="a subset of the stages, e.g. 04_evaluate 05_visualize")
    pipeline.add_argument(
        "--force",
        nargs="*",
        metavar="STAGE",
        choices=STAGES,
        help="rerun even what is up to date: every stage, or the stages named (e.g. --force 03_train)",
    )
    pipeline.set_defaults(func=cmd_pipeline)

    sweep = sub.add_parser("sweep", help="03_train through papermill once per learning rate")
    sweep.add_argument("--lrs", nargs="*", type=float, help="default: the YAML's lrs (the seed's three)")
    sweep.add_argument("--config", help="a config name in configs/ or a path")
    sweep.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a 03_train parameter (checked before any run starts); -p lr=X alone sweeps that one lr (with --lrs: "
        "an error); work_dir and resume are the sweep's own",
    )
    sweep.add_argument("--params-dir", default=str(paths.PIPELINE_PARAMS_DIR), help="the folder holding 03_train.yaml")
    sweep.add_argument("--outputs", default=str(paths.OUTPUTS_DIR), help="runs go to OUTPUTS/runs/")
    sweep.add_argument(
        "--sbatch", metavar="PATH", help="write a SLURM array script (one job per lr) instead of running"
    )
    sweep.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="one run per fold and lr on fold<k>_train/val.txt (02_prepare with folds=K)",
    )
    sweep.add_argument("--fold", type=int, metavar="k", help="with --folds K: fold k alone (one SLURM job's share)")
    sweep.add_argument("--force", action="store_true", help="retrain runs that are already trained, from scratch")
    sweep.add_argument("--no-yaml", action="store_true", help="only the parameters given here, not 03_train.yaml's")
    sweep.set_defaults(func=cmd_sweep)

    prepare = sub.add_parser(
        "prepare", help="02_prepare without the notebook: split, binarize, resize (the split source is printed)"
    )
    prepare.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a 02_prepare parameter"
    )
    prepare.set_defaults(func=cmd_prepare)

    split = sub.add_parser(
        "patient-split",
        help="the shipped benchmark split patient-v1: its counts, or rebuilt from the Kaggle CSVs and compared",
    )
    split.add_argument(
        "--csvs", metavar="DIR", help="the folder with the two full Kaggle CSVs (or its parent): rebuild and compare"
    )
    split.add_argument("--out", metavar="FILE", help="with --csvs: write the rebuilt split file here")
    split.add_argument(
        "--patient-table",
        metavar="FILE",
        help="with --csvs: default the one beside the CSVs if there, else the shipped one",
    )
    split.set_defaults(func=cmd_patient_split)

    predict = sub.add_parser(
        "predict", help="masks, overlays and a CSV for new radiographs (PNG/JPEG/DICOM files or folders)"
    )
    predict.add_argument("--checkpoint", "--model", required=True, help="a .pth, a run folder, or an exported .onnx")
    predict.add_argument("--config", help="default: config.py beside the checkpoint")
    predict.add_argument(
        "--out-dir", default=str(paths.OUTPUTS_DIR / "predictions"), help="masks, overlays and predictions.csv"
    )
    predict.add_argument("--threshold", type=float, help="probability threshold alone, instead of the post-processing")
    predict.add_argument(
        "--postprocess",
        choices=POSTPROCESS_CHOICES,
        default="winner",
        help="the run's scheme tuned on val: the val winner (default), triplet, dual; none: the model's own decision",
    )
    predict.add_argument("--device", help="cpu, cuda, cuda:1 (None: CUDA when available)")
    predict.add_argument(
        "--strict",
        action="store_true",
        help="refuse inputs the model was not made for (the warnings column) instead of predicting them",
    )
    predict.add_argument(
        "--rle", action="store_true", help="add an rle column: each mask in the SIIM release's RLE form"
    )
    predict.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse an image of more pixels, before decoding it where its header says (default {MAX_PIXELS:,}; "
        "0: no limit)",
    )
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, DICOM) or folders of them")
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser("export", help="an ONNX model (probabilities) and its side-car JSON, for other tools")
    export.add_argument("--checkpoint", required=True, help="a .pth or a run folder")
    export.add_argument("--config", help="default: config.py beside the checkpoint")
    export.add_argument("--out", required=True, help="the .onnx file to write (the .json goes beside it)")
    export.add_argument(
        "--postprocess",
        choices=POSTPROCESS_CHOICES,
        default="winner",
        help="the run's scheme tuned on val to put into the JSON: the val winner (default), triplet, "
        "dual; none leaves it out",
    )
    export.set_defaults(func=cmd_export)

    convert = sub.add_parser(
        "convert-siim", help="the original SIIM-ACR release (DICOM + RLE CSVs) -> the Kaggle PNG layout"
    )
    convert.add_argument(
        "src",
        help="the release: the folder holding dicom-images-train/, dicom-images-test/ and the RLE CSVs (or its parent)",
    )
    convert.add_argument(
        "out", help="the Kaggle layout to write (png_images/, png_masks/, the two stage_1 CSVs); raw_root for 01..05"
    )
    convert.add_argument(
        "--kaggle-csvs",
        metavar="DIR",
        help="a folder with the Kaggle dataset's stage_1_train_images.csv and stage_1_test_images.csv: "
        "Kaggle names, stages and CSV rows",
    )
    convert.add_argument("--workers", type=int, help="worker processes (default: every core)")
    convert.set_defaults(func=cmd_convert_siim)

    demo_data = sub.add_parser("demo-data", help="only generate the demo dataset")
    demo_data.add_argument("--dest", default=str(paths.DEMO_DIR), help="the folder to write the Kaggle layout into")
    demo_data.add_argument("--n-train", type=int, default=DemoSpec.n_train, help="train-stage images")
    demo_data.add_argument("--n-test", type=int, default=DemoSpec.n_test, help="test-stage images")
    demo_data.add_argument("--size", type=int, default=DemoSpec.size, help="image side in pixels")
    demo_data.add_argument("--seed", type=int, default=DemoSpec.seed, help="random seed")
    demo_data.set_defaults(func=cmd_demo_data)

    download = sub.add_parser("download", help="download the Kaggle dataset (needs kaggle credentials)")
    download.add_argument("--dest", default=str(paths.RAW_DIR), help="where to unpack the dataset")
    download.set_defaults(func=cmd_download)

    index = sub.add_parser("index", help="rewrite outputs/index.html")
    index.add_argument("--outputs", default=str(paths.OUTPUTS_DIR), help="the outputs folder whose index.html to write")
    index.set_defaults(func=cmd_index)
    for name, command in sub.choices.items():
        command.formatter_class = HelpFormatter
        command.epilog = "examples:\n" + "\n".join(f"  {example}" for example in EXAMPLES[name])
    return parser


# Failures whose message says all (the file or folder, the problem, what to do): one line, no traceback.
SELF_EXPLAINING = (
    ("helpers.core.fileio", "CorruptFileError"),
    ("helpers.core.parameters", "ParameterError"),
    ("helpers.data.prepared_folder", "PreparedDataError"),
    ("helpers.core.locks", "FolderLocked"),
    ("helpers.modeling.checkpoint", "CheckpointError"),
    ("helpers.modeling.divergence", "TrainingDiverged"),
    ("helpers.workflow.pipeline", "StageFailed"),
)


def _self_explaining(err: BaseException) -> bool:
    classes = [getattr(sys.modules[module], name) for module, name in SELF_EXPLAINING if module in sys.modules]
    return isinstance(err, tuple(classes))


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM's pre-emption, ``kill``, a container stopping): stopped as Ctrl-C stops, temporary files
    removed, the interrupted training run resumable."""


TERMINATED = 143  # 128 + SIGTERM, what the shell reports for a process that SIGTERM ended


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> None:
    import shlex
    import signal

    from helpers.core.locks import COMMAND_ENV

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    own_command = COMMAND_ENV not in os.environ
    if own_command:  # what the locks taken by this process and its kernels name
        os.environ[COMMAND_ENV] = shlex.join(["python", "-m", "helpers", *words])
    previous = (
        signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        args.func(args)
    except KeyboardInterrupt as err:
        what = "Terminated (SIGTERM)" if isinstance(err, Terminated) else "Interrupted"
        print(
            f"\n{what}. Nothing half-written is kept; run `python -m helpers {args.command}` again to go on "
            "(finished steps are skipped, an interrupted training run resumes from its last checkpoint).",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(TERMINATED if isinstance(err, Terminated) else INTERRUPTED) from None
    except Exception as err:
        if _self_explaining(err):
            raise SystemExit(f"error: {err}") from err
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if own_command:
            os.environ.pop(COMMAND_ENV, None)


if __name__ == "__main__":
    main()
