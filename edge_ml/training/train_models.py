"""Train and export the gateway's on-device models, with their manifests and evaluation figures.

    python -m edge_ml.training.train_models [--out edge_ml/models] [--ds1 DIR]

1. `ecg_beat_classifier`: is a beat ventricular?  A small dense network over how the beat's shape differs from
   its lead's dominant beat, and four scalars (`edge_ml.beats.beat_features`), trained on the 22 records of DS1, the
   training half of the standard inter-patient split of the MIT-BIH Arrhythmia Database (de Chazal et al.,
   2004), both leads.  The beats and their features come from the gateway's own lead analysis
   (`edge_ml.ecg.LeadAnalyzer`: its QRS detector, its templates), so training sees exactly what the gateway
   computes; each detected beat takes the label of the reference beat within 150 ms (V and E are
   ventricular; fusion, paced and unclassifiable beats are left out).  Evaluated inter-patient: five folds
   of whole records, each scored by a model that never saw them.
2. `battery_forecast`: a small regressor for predictive maintenance: from the last 12 hourly battery
   readings (%) of a device, the hours until it reaches 10 %.  Trained and evaluated on synthetic
   discharge curves (capacity, load and ageing varied), mean absolute error reported.

Training is not bit-for-bit repeatable (TensorFlow's CPU kernels): each run writes new files, with their own
figures, and the tests check the committed ones against their manifests.  Needs TensorFlow (training only;
the gateway runs the exported .tflite files with ai-edge-litert) and DS1
(`--ds1`, default ../shared/data/mitdb-ds1 beside the repository).  The figures printed at the end are also
written into each manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_ml.beats import FEATURES, MODEL_NAME, BeatInput, beat_features
from edge_ml.ecg import LeadAnalyzer
from edge_ml.wfdb import read_annotations, read_record

SEED = 2026
VENTRICULAR = {5, 10}  # V, E
LEFT_OUT = {6, 12, 13, 38}  # F (fusion), / (paced), Q (unclassifiable), f (paced fusion)
THRESHOLD = 0.5  # the operating point reported; the rhythm rules use the probability itself
FOLDS = 5


class _Recorder:
    """Stands in for the classifier during extraction and keeps every beat's inputs."""

    def __init__(self) -> None:
        self.rows: list[npt.NDArray[np.float32] | None] = []

    def probability(self, beat: BeatInput) -> float:
        self.rows.append(beat_features(beat) if beat.template is not None else None)
        return 0.0


def ds1_beats(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, record names) of every labelled beat the gateway detects in DS1, both leads."""
    xs, ys, names = [], [], []
    for header in sorted(folder.glob("*.hea")):
        record = read_record(header.with_suffix(""))
        reference = [a for a in read_annotations(header.with_suffix(".atr")) if a.is_beat]
        samples = np.array([a.sample for a in reference])
        codes = np.array([a.code for a in reference])
        for lead in range(min(2, len(record.signals))):
            fs = record.rate_hz(lead)
            recorder = _Recorder()
            analyzer = LeadAnalyzer(fs, classifier=recorder)
            x = record.physical(lead)
            beats: list[Any] = []
            for i in range(0, len(x), round(fs)):
                for assessment in analyzer.process(x[i : i + round(fs)]):
                    beats += assessment.beats
            for beat, row in zip(beats, recorder.rows, strict=True):
                j = int(np.argmin(np.abs(samples - beat.index)))
                if row is None or abs(samples[j] - beat.index) > 0.15 * fs or codes[j] in LEFT_OUT:
                    continue
                xs.append(row)
                ys.append(int(codes[j] in VENTRICULAR))
                names.append(record.name)
    return np.array(xs, dtype=np.float32), np.array(ys, dtype=np.float32), np.array(names)


def _classifier(tf: Any) -> Any:
    tf.keras.utils.set_random_seed(SEED)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input((FEATURES,)),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    return model


def _fit(tf: Any, x: np.ndarray, y: np.ndarray) -> Any:
    # Balanced: ventricular beats are about 8 % of DS1.
    weights = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    model = _classifier(tf)
    model.fit(x, y, sample_weight=weights, epochs=15, batch_size=256, verbose=0)
    return model


def _auc(negative: np.ndarray, positive: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(np.concatenate([negative, positive])))
    pos_ranks = ranks[len(negative) :]
    return float((pos_ranks.sum() - len(positive) * (len(positive) - 1) / 2) / (len(positive) * len(negative)))


def train_beat_classifier(tf: Any, ds1: Path) -> tuple[bytes, dict[str, Any], np.ndarray]:
    x, y, names = ds1_beats(ds1)
    records = sorted(set(names.tolist()))
    np.random.default_rng(SEED).shuffle(records)
    predicted = np.zeros(len(y))
    for fold in range(FOLDS):
        held_out = np.isin(names, records[fold::FOLDS])
        predicted[held_out] = _fit(tf, x[~held_out], y[~held_out]).predict(x[held_out], verbose=0).ravel()
    positive = predicted >= THRESHOLD
    tp = int(np.sum(positive & (y == 1)))
    fp = int(np.sum(positive & (y == 0)))
    fn = int(np.sum(~positive & (y == 1)))
    figures: dict[str, Any] = {
        "source": "MIT-BIH Arrhythmia Database DS1 (22 records), both leads, beats as the gateway detects them",
        "beats": len(y),
        "ventricular_beats": int(y.sum()),
        "evaluation": f"inter-patient, {FOLDS} folds of whole records",
        "threshold": THRESHOLD,
        "sensitivity": round(tp / (tp + fn), 4),
        "ppv": round(tp / (tp + fp), 4),
        "roc_auc": round(_auc(predicted[y == 0], predicted[y == 1]), 4),
    }
    model = _fit(tf, x, y)
    reference = x[int(np.argmax(y))]  # the first ventricular beat, as the committed reference input
    return _convert(tf, model), figures, reference


def discharge_curves(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic hourly battery readings: (last 12 readings in %, hours until 10 %)."""
    xs, ys = [], []
    for _ in range(n):
        hours = rng.uniform(40, 400)  # full-to-empty time at the current load
        ageing = rng.uniform(0.0, 0.6)  # faster drop near the end for worn cells
        t = np.arange(0, hours)
        fraction = 1 - (t / hours) ** (1 + ageing)
        level = np.clip(100 * fraction + rng.normal(0, 0.7, len(t)), 0, 100)
        end = int(np.argmax(level < 10)) if np.any(level < 10) else len(level)
        if end < 14:
            continue
        i = int(rng.integers(12, end - 1))
        xs.append(level[i - 12 : i] / 100.0)
        ys.append(float(end - i))
    return np.array(xs, dtype=np.float32), np.array(ys, dtype=np.float32)


def train_battery(tf: Any) -> tuple[bytes, dict[str, Any]]:
    rng = np.random.default_rng(SEED + 1)
    x, y = discharge_curves(rng, 12_000)
    xt, yt = discharge_curves(rng, 2_000)
    tf.random.set_seed(SEED + 1)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input((12,)),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="mae")
    model.fit(x, y / 100.0, epochs=60, batch_size=128, verbose=0)
    predicted = model.predict(xt, verbose=0)[:, 0] * 100.0
    figures = {
        "training_curves": len(x),
        "test_curves": len(xt),
        "mae_hours": round(float(np.mean(np.abs(predicted - yt))), 2),
        "median_hours_to_empty": round(float(np.median(yt)), 1),
    }
    return _convert(tf, model), figures


def _convert(tf: Any, model: Any) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    data: bytes = converter.convert()
    return data


def write(tf: Any, out: Path, name: str, model: bytes, manifest: dict[str, Any], reference_input: np.ndarray) -> None:
    (out / f"{name}.tflite").write_bytes(model)
    manifest = {
        "name": name,
        "version": "1.0.0",
        "file": f"{name}.tflite",
        "sha256": hashlib.sha256(model).hexdigest(),
        **manifest,
    }
    # The committed reference: what this exact file outputs for this exact input (tests check it).
    interpreter = tf.lite.Interpreter(model_content=model)
    interpreter.allocate_tensors()
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], reference_input.reshape(inp["shape"]).astype(np.float32))
    interpreter.invoke()
    manifest["reference"] = {
        "input": [round(float(v), 6) for v in reference_input.ravel()],
        "output": [round(float(v), 6) for v in interpreter.get_tensor(outp["index"]).ravel()],
    }
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main() -> None:
    import tensorflow as tf  # noqa: PLC0415 - training extra only

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "models")
    parser.add_argument(
        "--ds1", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "mitdb-ds1"
    )
    args = parser.parse_args()
    out = args.out
    beat_model, beat_figures, reference_beat = train_beat_classifier(tf, args.ds1)
    write(
        tf,
        out,
        MODEL_NAME,
        beat_model,
        {
            "description": "Probability that a beat is ventricular, from its shape and its lead's dominant beat",
            "inputs": [{"name": "beat_features", "shape": [1, FEATURES], "dtype": "float32"}],
            "outputs": [{"name": "p_ventricular", "shape": [1, 1], "dtype": "float32"}],
            "preprocessing": {
                "features": "edge_ml.beats.beat_features: shape minus template (64), width/100 ms, correlation, "
                "log amplitude ratio, RR ratio",
                "window_s": [-0.25, 0.45],
            },
            "sample_rate_hz": None,
            "evaluation": beat_figures,
        },
        reference_beat,
    )
    battery_model, battery_figures = train_battery(tf)
    reference_levels = np.linspace(0.80, 0.69, 12, dtype=np.float32)
    write(
        tf,
        out,
        "battery_forecast",
        battery_model,
        {
            "description": "Hours until the battery reaches 10 %, from the last 12 hourly readings",
            "inputs": [{"name": "battery_fraction", "shape": [1, 12], "dtype": "float32"}],
            "outputs": [{"name": "hours_to_10pct_div_100", "shape": [1, 1], "dtype": "float32"}],
            "sample_rate_hz": 1 / 3600,
            "evaluation": battery_figures,
        },
        reference_levels,
    )
    print(json.dumps({MODEL_NAME: beat_figures, "battery_forecast": battery_figures}, indent=2))


if __name__ == "__main__":
    main()
