"""The on-device model runtime: integrity check before loading, and the committed outputs reproduced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_ml.beats import MODEL_NAME
from edge_ml.runtime import ModelError, bundled, load_model
from gateway.config import parse_config
from gateway.daemon import Gateway

MODELS = ("ecg_beat_classifier", "battery_forecast")


@pytest.mark.parametrize("name", MODELS)
def test_committed_model_reproduces_its_reference_output(name: str) -> None:
    model = load_model(bundled(name))
    reference = model.manifest.extra["reference"]
    output = model.run(np.array(reference["input"], dtype=np.float32))
    assert np.allclose(output.ravel(), reference["output"], atol=1e-5)
    assert model.runs == 1 and model.latency_ms(99) is not None
    assert model.manifest.extra["evaluation"], "the training figures ship with the model"


@pytest.mark.parametrize("tamper", ["one byte changed", "another model's file", "hash edited"])
def test_a_model_that_fails_its_check_is_refused(tmp_path: Path, tamper: str) -> None:
    for name in MODELS:
        for suffix in (".tflite", ".json"):
            shutil.copy(bundled(name).with_suffix(suffix), tmp_path / f"{name}{suffix}")
    model_file = tmp_path / "ecg_beat_classifier.tflite"
    manifest = tmp_path / "ecg_beat_classifier.json"
    if tamper == "one byte changed":
        data = bytearray(model_file.read_bytes())
        data[len(data) // 2] ^= 0x01
        model_file.write_bytes(bytes(data))
    elif tamper == "another model's file":
        shutil.copy(tmp_path / "battery_forecast.tflite", model_file)
    else:
        doc = json.loads(manifest.read_text())
        doc["sha256"] = "0" * 64
        manifest.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(manifest)


def test_missing_or_broken_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="manifest"):
        load_model(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ModelError, match="manifest"):
        load_model(tmp_path / "broken.json")


def test_battery_forecast_is_sensible() -> None:
    model = load_model(bundled("battery_forecast"))
    slow = model.run(np.linspace(0.90, 0.89, 12, dtype=np.float32))[0, 0] * 100
    fast = model.run(np.linspace(0.40, 0.18, 12, dtype=np.float32))[0, 0] * 100
    assert slow > fast > 0, (slow, fast)  # a slowly draining battery lasts longer


def test_the_beat_classifier_ships_its_inter_patient_evaluation() -> None:
    manifest = load_model(bundled("ecg_beat_classifier")).manifest
    evaluation = manifest.extra["evaluation"]
    assert "inter-patient" in evaluation["evaluation"] and "DS1" in evaluation["source"]
    assert evaluation["roc_auc"] > 0.85 and evaluation["sensitivity"] > 0.6
    assert manifest.inputs[0].shape == (1, 68) and manifest.outputs[0].shape == (1, 1)


def test_a_refused_beat_model_leaves_the_rules_in_charge(tmp_path: Path) -> None:
    from gateway.replay import beat_model  # noqa: PLC0415

    assert beat_model() is not None
    for suffix in (".tflite", ".json"):
        shutil.copy(bundled("ecg_beat_classifier").with_suffix(suffix), tmp_path / f"m{suffix}")
    (tmp_path / "m.tflite").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        load_model(tmp_path / "m.json")


def test_the_daemon_loads_the_shipped_beat_classifier(tmp_path: Path) -> None:
    """The daemon once asked for a model that no longer shipped, logged an error and ran on the rules alone."""
    config = parse_config(
        {
            "gateway": {"id": "gw-1", "state_dir": str(tmp_path)},
            "buffer": {"key_file": str(tmp_path / "buffer.key")},
            "mqtt": {"host": "127.0.0.1", "allow_plaintext_loopback": True},
        },
        check_secrets=False,
    )
    model = Gateway(config)._load_beat_model()
    assert model is not None
    assert model.manifest.name == MODEL_NAME


def test_a_beat_model_that_cannot_judge_a_batch_is_refused_at_start_and_the_rules_take_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The classifier judges beats ROWS at a time; a model that cannot take a batch (a batch size baked into it)
    is found out when the classifier is made, not at the first beat, and the pipeline falls back to the rules."""
    from edge_ml.beats import ModelBeatClassifier, RuleBeatClassifier  # noqa: PLC0415
    from edge_ml.runtime import Model  # noqa: PLC0415
    from gateway.alarms import AlarmEngine  # noqa: PLC0415
    from gateway.config import AlarmsSection  # noqa: PLC0415
    from gateway.core.stats import Metrics  # noqa: PLC0415
    from gateway.pipeline import Pipeline  # noqa: PLC0415

    model = load_model(bundled(MODEL_NAME))
    assert isinstance(ModelBeatClassifier(model), ModelBeatClassifier)

    def refuse(self: Model) -> None:
        raise ModelError("the model cannot run 16 rows at once", model=self.manifest.name)

    monkeypatch.setattr(Model, "prepare_rows", refuse)
    with pytest.raises(ModelError):
        ModelBeatClassifier(load_model(bundled(MODEL_NAME)))
    pipeline = Pipeline(
        None,  # type: ignore[arg-type]  # the classifier is chosen before anything is stored
        AlarmEngine(AlarmsSection()),
        Metrics(),
        gateway_id="gw",
        patients={},
        beat_model=load_model(bundled(MODEL_NAME)),
    )
    assert isinstance(pipeline._beat_classifier(), RuleBeatClassifier)
