"""Train and export the gateway's two on-device models, with their manifests and evaluation figures.

    python -m edge_ml.training.train_models [--out edge_ml/models]

1. `ecg_beat_autoencoder`: a small dense autoencoder over one beat (0.25 s before to 0.45 s after the R
   peak, resampled to 64 points, baseline- and amplitude-normalised).  Trained on normal beats of the
   first 15 minutes of MIT-BIH record 100 (../shared/data) plus synthetic beats; its reconstruction error
   is the anomaly score.  Evaluated on the last 15 minutes: error distribution of normal (N) beats against
   atrial (A) and ventricular (V) premature beats, ROC AUC, and the threshold at the 99.5th percentile of
   normal beats.
2. `battery_forecast`: a small regressor for predictive maintenance: from the last 12 hourly battery
   readings (%) of a device, the hours until it reaches 10 %.  Trained and evaluated on synthetic
   discharge curves (capacity, load and ageing varied), mean absolute error reported.

Needs TensorFlow (training only; the gateway runs the exported .tflite files with ai-edge-litert).
The figures printed at the end are also written into each manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.ecg import BEAT_AFTER_S as AFTER_S
from edge_ml.ecg import BEAT_BEFORE_S as BEFORE_S
from edge_ml.ecg import BEAT_POINTS, normalise_beat  # one preprocessing for training and the gateway
from hil.physiology import SyntheticEcg
from hil.wfdb import WfdbError, physionet_dir, read_annotations, read_record

SEED = 2026


def beat_windows(x: np.ndarray, fs: float, peaks: list[int]) -> np.ndarray:
    """Normalised beat windows around R peaks (the same preprocessing the gateway applies)."""
    before, after = round(BEFORE_S * fs), round(AFTER_S * fs)
    out = []
    for p in peaks:
        if p - before < 0 or p + after > len(x):
            continue
        w = x[p - before : p + after]
        out.append(normalise_beat(w))
    return np.array(out, dtype=np.float32)


def _auc(negative: np.ndarray, positive: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(np.concatenate([negative, positive])))
    pos_ranks = ranks[len(negative) :]
    return float((pos_ranks.sum() - len(positive) * (len(positive) - 1) / 2) / (len(positive) * len(negative)))


def train_ecg(tf: Any) -> tuple[bytes, dict[str, Any]]:
    rng = np.random.default_rng(SEED)
    train, test_n, test_ab = [], np.zeros((0, BEAT_POINTS)), np.zeros((0, BEAT_POINTS))
    source = "synthetic only"
    try:
        record = read_record(physionet_dir() / "100")
        fs = record.rate_hz(0)
        x = record.physical(0)
        ann = [a for a in read_annotations(physionet_dir() / "100.atr") if a.is_beat]
        half = len(x) // 2
        normal = [a.sample for a in ann if a.code == 1]
        abnormal = [a.sample for a in ann if a.code != 1]
        train.append(beat_windows(x, fs, [p for p in normal if p < half]))
        test_n = beat_windows(x, fs, [p for p in normal if p >= half])
        test_ab = beat_windows(x, fs, [p for p in abnormal if p >= half])
        source = "MIT-BIH record 100 (first half, N beats) + synthetic"
    except WfdbError:
        pass
    for seed in range(8):
        ecg = SyntheticEcg(250.0, heart_rate_bpm=float(rng.uniform(55, 110)), seed=seed, keep_beats=True)
        sx = ecg.next(250 * 60) / 1000.0
        peaks = [round(t * 250.0) for t in ecg.all_beats or []]
        train.append(beat_windows(sx, 250.0, peaks))
    data = np.concatenate(train)
    rng.shuffle(data)
    tf.random.set_seed(SEED)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input((BEAT_POINTS,)),
            tf.keras.layers.Dense(24, activation="relu"),
            tf.keras.layers.Dense(8, activation="relu"),
            tf.keras.layers.Dense(24, activation="relu"),
            tf.keras.layers.Dense(BEAT_POINTS),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(data, data, epochs=40, batch_size=64, verbose=0)
    figures: dict[str, Any] = {"training_beats": len(data), "source": source}
    if len(test_n) and len(test_ab):
        err_n = np.mean((model.predict(test_n, verbose=0) - test_n) ** 2, axis=1)
        err_ab = np.mean((model.predict(test_ab, verbose=0) - test_ab) ** 2, axis=1)
        threshold = float(np.percentile(err_n, 99.5))
        figures |= {
            "test_normal_beats": len(test_n),
            "test_abnormal_beats": len(test_ab),
            "normal_error_median": float(np.median(err_n)),
            "abnormal_error_median": float(np.median(err_ab)),
            "roc_auc": round(_auc(err_n, err_ab), 4),
            "threshold_mse": threshold,
            "abnormal_above_threshold": float(np.mean(err_ab > threshold)),
        }
    return _convert(tf, model), figures


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
    out = parser.parse_args().out
    ecg_model, ecg_figures = train_ecg(tf)
    reference_beat = beat_windows(
        SyntheticEcg(250.0, seed=99, keep_beats=True).next(2500) / 1000.0,
        250.0,
        [round(0.3 * 250)] + [round(t * 250) for t in [1.15, 2.0]],
    )[0]
    write(
        tf,
        out,
        "ecg_beat_autoencoder",
        ecg_model,
        {
            "description": "Beat-shape anomaly score: mean squared reconstruction error of a normalised beat",
            "inputs": [{"name": "beat", "shape": [1, BEAT_POINTS], "dtype": "float32"}],
            "outputs": [{"name": "reconstruction", "shape": [1, BEAT_POINTS], "dtype": "float32"}],
            "preprocessing": {
                "window_s": [-BEFORE_S, AFTER_S],
                "points": BEAT_POINTS,
                "normalisation": "minus median, divided by the largest absolute value",
            },
            "sample_rate_hz": None,
            "evaluation": ecg_figures,
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
    print(json.dumps({"ecg_beat_autoencoder": ecg_figures, "battery_forecast": battery_figures}, indent=2))


if __name__ == "__main__":
    main()
