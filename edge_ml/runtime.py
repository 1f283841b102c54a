"""The on-device model runtime: LiteRT models, each checked against its manifest before it is loaded.

A manifest (`NAME.json` beside `NAME.tflite`) states the model's inputs and outputs (names, shapes, dtypes,
sampling rate where a signal goes in), its version, and the SHA-256 of the model file.  A file whose hash
differs is refused with a clear error, never loaded: a model is a medical function, and a swapped or
corrupted file must not run.  Inference uses ai-edge-litert's Interpreter (tflite_runtime as a fallback) and
keeps per-model latency figures.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.core.errors import GatewayError

MODELS_DIR = Path(__file__).resolve().parent / "models"
ROWS = 16  # rows a batched call runs (`Model.run_rows`)


class ModelError(GatewayError):
    """A model or its manifest is missing, inconsistent, or fails its integrity check."""


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # noqa: PLC0415
        except ImportError:
            raise ModelError("no LiteRT runtime: install ai-edge-litert (or tflite-runtime)") from None
    return Interpreter


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample_rate_hz: float | None
    extra: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            doc = json.loads(path.read_text("utf-8"))
            specs = {
                key: tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in doc[key])
                for key in ("inputs", "outputs")
            }
            return cls(
                doc["name"],
                doc["version"],
                doc["file"],
                doc["sha256"],
                specs["inputs"],
                specs["outputs"],
                doc.get("sample_rate_hz"),
                doc,
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelError(
                "model manifest unreadable or incomplete", path=str(path), error=type(err).__name__
            ) from None


@dataclass
class Model:
    """A loaded, verified model.  `run` takes and returns arrays shaped as the manifest says."""

    manifest: Manifest
    _interpreter: Any
    _input_index: int
    _output_index: int
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    runs: int = 0  # calls of the model (a `run_rows` call judges up to ROWS rows)
    content: bytes = b""  # the verified model file, for the interpreter that runs rows (`run_rows`)
    _rows_interpreter: Any = None

    def run(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        spec = self.manifest.inputs[0]
        array = x if isinstance(x, np.ndarray) and x.shape == spec.shape and x.dtype == spec.dtype else None
        if array is None:
            array = np.asarray(x, dtype=spec.dtype).reshape(spec.shape)
        start = time.perf_counter()
        self._interpreter.set_tensor(self._input_index, array)
        self._interpreter.invoke()
        out: npt.NDArray[np.float32] = self._interpreter.get_tensor(self._output_index)  # a copy already
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        self.runs += 1
        return out

    def run_rows(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run a model of one input row (shape (1, n)) on `ROWS` rows at once: `x` is (ROWS, n), the result has
        one row of output per row of input.  One LiteRT call for a batch of beats; a row's result is the same
        whatever the other rows hold (the same call, the same shape, every time: rows are computed alike)."""
        interpreter = self._rows_interpreter or self.prepare_rows()
        start = time.perf_counter()
        interpreter.set_tensor(self._input_index, x)
        interpreter.invoke()
        out: npt.NDArray[np.float32] = interpreter.get_tensor(self._output_index)
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        self.runs += 1
        return out

    def prepare_rows(self) -> Any:
        """Build the interpreter `run_rows` uses (ModelError if the model cannot take ROWS rows, e.g. a batch size
        baked into it): a caller that will run rows asks at start-up, not at the first beat."""
        if self._rows_interpreter is None:
            try:
                interpreter = _interpreter_class()(model_content=self.content)
                interpreter.resize_tensor_input(self._input_index, [ROWS, *self.manifest.inputs[0].shape[1:]])
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as err:
                raise ModelError(
                    f"the model cannot run {ROWS} rows at once", model=self.manifest.name, error=type(err).__name__
                ) from None
            out = interpreter.get_output_details()[0]["shape"]
            if tuple(out) != (ROWS, *self.manifest.outputs[0].shape[1:]):
                raise ModelError(f"the model gives no row of output per row of {ROWS}", model=self.manifest.name)
            self._rows_interpreter = interpreter
        return self._rows_interpreter

    def latency_ms(self, percentile: float) -> float | None:
        return float(np.percentile(self.latencies_ms, percentile)) if self.latencies_ms else None


def load_model(manifest_path: Path) -> Model:
    """Verify the model file against its manifest, then load it; ModelError says what is wrong."""
    manifest = Manifest.read(manifest_path)
    model_path = manifest_path.parent / manifest.file
    if not model_path.is_file():
        raise ModelError("model file missing", path=str(model_path))
    content = model_path.read_bytes()
    if hashlib.sha256(content).hexdigest() != manifest.sha256:
        raise ModelError("model file does not match its manifest's SHA-256; refusing to load it", path=str(model_path))
    try:
        interpreter = _interpreter_class()(model_content=content)  # the bytes checked, not the file again
        interpreter.allocate_tensors()
    except ValueError as err:
        raise ModelError("LiteRT could not load the model", path=str(model_path), error=type(err).__name__) from None
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    if tuple(inp["shape"]) != manifest.inputs[0].shape or tuple(out["shape"]) != manifest.outputs[0].shape:
        raise ModelError("model tensors do not match the manifest", path=str(model_path))
    return Model(manifest, interpreter, int(inp["index"]), int(out["index"]), content=content)


def bundled(name: str) -> Path:
    """The manifest of a model that ships with the gateway."""
    return MODELS_DIR / f"{name}.json"
