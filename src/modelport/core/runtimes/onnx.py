"""ONNX models through onnxruntime; the signature is read from the graph.

Options (model.yaml ``options``): ``intra_op_threads`` (the session's threads; the registry
passes the process's share of the cores), ``lone_row_threads`` (if more than that, a second
session with this many threads serves one-row batches while the other HTTP workers are
idle: see ``core/busy.py``; the registry sets it with several workers), ``providers``.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from modelport.core.runtime import BaseLoadedModel, ModelConfig, example_batch
from modelport.core.signature import NamedArrays, Signature, Task, TensorSpec
from modelport.errors import ConfigError, MissingExtra

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("onnx", "onnxruntime") from exc

log = logging.getLogger("modelport.runtime.onnx")

_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}
# skl2onnx names for a classifier exported with zipmap=False
_LABEL_NAMES = ("output_label", "label")
_PROBA_NAMES = ("output_probability", "probabilities")


def _spec(arg: Any) -> TensorSpec | None:
    dtype = _ONNX_DTYPES.get(arg.type)
    if dtype is None:
        return None  # sequences / maps (e.g. ZipMap) are not served as tensors
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or [-1]))
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


def _threads(config: ModelConfig, key: str, default: int) -> int:
    """A thread-count option: a whole number ≥ 0 (as int, whole float or digits); 0 means
    ``default``, as onnxruntime reads 0."""
    value = config.options.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"options.{key} must be a whole number of threads (0: the default)")
    return value or default


# an external-data entry's key, "location", as protobuf writes it (field 1, 8 bytes)
_EXTERNAL_MARKER = b"\x0a\x08location"
# A lone-row session is only kept for a graph whose answers it provably repeats: plain ONNX
# operators (the ai.onnx.ml tree ensembles merge per-thread sums in the order threads
# finish), weights inside the file (external data would be a second copy not counted in
# the registry's size limit, which reads the file's size), and equal outputs, bit for bit,
# on repeated probe rows.
_REFUSE_MARKERS = {
    b"ai.onnx.ml": "it uses ai.onnx.ml operators",
    _EXTERNAL_MARKER: "its weights are in external files",
}
PROBE_ROUNDS = 3


def _probe_rows(signature: Signature, rows: int = 4) -> NamedArrays | None:
    """Random rows shaped as ``example_batch``'s (None if an input is not numeric)."""
    rng = np.random.default_rng(0)
    batch: NamedArrays = {}
    for name, zeros in example_batch(signature, rows).items():
        kind = zeros.dtype.kind
        if kind == "f":
            batch[name] = rng.standard_normal(zeros.shape).astype(zeros.dtype)
        elif kind in "iub":
            batch[name] = rng.integers(0, 2 if kind == "b" else 8, zeros.shape).astype(zeros.dtype)
        else:
            return None
    return batch


@contextlib.contextmanager
def _mapped(artifact: Path) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, mapped rather than read (mmap refuses an empty file)."""
    if artifact.stat().st_size == 0:
        yield b""
        return
    with artifact.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def _markers(artifact: Path, markers: Iterable[bytes]) -> list[bytes]:
    """Those of ``markers`` that occur in the file's bytes."""
    with _mapped(artifact) as data:
        return [m for m in markers if data.find(m) >= 0]


def _external_files(artifact: Path) -> set[Path]:
    """The files the model's external-data entries name. Each entry is written as the
    marker (key "location"), then field 2, the value: a length and a path relative to
    the model file's directory."""
    files: set[Path] = set()
    with _mapped(artifact) as data:
        at = data.find(_EXTERNAL_MARKER)
        while at >= 0:
            pos = at + len(_EXTERNAL_MARKER)
            at = data.find(_EXTERNAL_MARKER, pos)
            if data[pos : pos + 1] != b"\x12":
                continue
            length, shift, pos, ended = 0, 0, pos + 1, False
            while pos < len(data) and shift < 28 and not ended:  # a varint; paths are short
                byte = data[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                ended = byte < 0x80
            if not ended or pos + length > len(data):
                continue  # not an entry after all (the bytes matched inside other data)
            try:
                location = PurePosixPath(data[pos : pos + length].decode())
            except UnicodeDecodeError:
                continue
            # ONNX itself refuses a location outside the model's directory
            if not location.is_absolute() and ".." not in location.parts:
                files.add(artifact.parent / location)
    return files


def footprint(artifact: Path) -> int:
    """About how many bytes a session of this model loads: the file and the external
    data files it names (a file named twice counts once; one that cannot be read counts
    nothing here, and onnxruntime will say why when it loads)."""
    size = artifact.stat().st_size
    for path in _external_files(artifact):
        try:
            size += path.stat().st_size if path.is_file() else 0
        except OSError:
            continue
    return size


def _why_not_lone(artifact: Path, plain: Any, lone: Any, signature: Signature) -> str | None:
    """None if ``lone`` may stand in for ``plain`` on one-row batches, else the reason."""
    found = _markers(artifact, _REFUSE_MARKERS)
    if found:
        return _REFUSE_MARKERS[found[0]]
    probes = _probe_rows(signature)
    if probes is None:
        return "an input is not numeric"
    try:
        for i in range(len(next(iter(probes.values())))):
            row = {name: value[i : i + 1] for name, value in probes.items()}
            expected = plain.run(None, row)
            for _ in range(PROBE_ROUNDS):
                got = lone.run(None, row)
                if not all(
                    np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind in "fc")
                    for a, b in zip(expected, got, strict=True)
                ):
                    return "its answers on more threads differ on a probe row"
    except Exception as exc:  # a probe the graph refuses: do not guess
        return f"a probe row failed ({type(exc).__name__})"
    return None


def _session(artifact: Path, threads: int, providers: list[str], lone: bool = False) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if lone:
        # its threads spin while a run lasts (a one-row run is a few short parallel steps,
        # too short to sleep between) but stop when it ends: the cores are only borrowed
        options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(
            str(artifact), sess_options=options, providers=providers or None
        )
    except Exception as exc:
        raise ConfigError(f"{artifact.name}: onnxruntime cannot load it: {exc}") from exc


class OnnxModel(BaseLoadedModel):
    releases_gil = True  # onnxruntime drops the GIL for the whole session.run

    def __init__(
        self,
        session: Any,
        signature: Signature,
        rename: dict[str, str],
        lone_session: Any = None,
    ) -> None:
        self._session = session
        self.signature = signature
        self._rename = rename  # graph output name -> served name
        self._output_names = list(rename)
        self._lone_session = lone_session
        if lone_session is not None:
            self.predict_lone = self._predict_lone

    def predict(self, inputs: NamedArrays) -> NamedArrays:
        return self._outputs(self._session.run(self._output_names, inputs))

    def _predict_lone(self, inputs: NamedArrays) -> NamedArrays:
        """A one-row batch on the lone-row session (more threads; same results)."""
        return self._outputs(self._lone_session.run(self._output_names, inputs))

    def _outputs(self, results: list[Any]) -> NamedArrays:
        return {
            self._rename[name]: np.asarray(value)
            for name, value in zip(self._output_names, results, strict=True)
        }

    def warmup(self) -> None:
        super().warmup()
        if self._lone_session is not None:
            self._predict_lone(example_batch(self.signature))


class OnnxRuntime:
    name = "onnx"

    def load(self, artifact: Path, config: ModelConfig) -> OnnxModel:
        # default: every core this process may run on (taskset/cgroup affinity respected)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        threads = _threads(config, "intra_op_threads", cores)
        lone_threads = _threads(config, "lone_row_threads", 0)
        wanted = config.options.get("providers") or ["CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        session = _session(artifact, threads, providers)
        inputs = tuple(s for s in (_spec(a) for a in session.get_inputs()) if s is not None)
        if len(inputs) != len(session.get_inputs()):
            raise ConfigError(f"{artifact.name}: graph inputs must be tensors")
        outputs = [s for s in (_spec(a) for a in session.get_outputs()) if s is not None]
        names = {s.name for s in outputs}
        label = next((n for n in _LABEL_NAMES if n in names), None)
        proba = next((n for n in _PROBA_NAMES if n in names), None)
        if label and proba:
            rename = {label: "label", proba: "probabilities"}
            by_name = {s.name: s for s in outputs}
            n_classes = by_name[proba].shape[-1]
            labels = config.labels or (
                tuple(str(i) for i in range(n_classes)) if n_classes > 0 else None
            )
            signature = Signature(
                inputs=inputs,
                outputs=(
                    TensorSpec("label", by_name[label].dtype, (-1,)),
                    TensorSpec(
                        "probabilities", by_name[proba].dtype, (-1, n_classes), names=labels
                    ),
                ),
                task=Task.CLASSIFICATION,
                labels=labels,
            )
        else:
            rename = {s.name: s.name for s in outputs}
            signature = Signature(inputs=inputs, outputs=tuple(outputs))
        on_cpu = not providers or providers[0] == "CPUExecutionProvider"
        lone_session = None
        if lone_threads > threads and on_cpu:
            lone_session = _session(artifact, lone_threads, providers, lone=True)
            why_not = _why_not_lone(artifact, session, lone_session, signature)
            if why_not is None:
                log.info(
                    "%s: one-row batches may run on %d threads while the other workers are quiet",
                    artifact.name,
                    lone_threads,
                )
            else:
                log.info("%s: no lone-row session: %s", artifact.name, why_not)
                lone_session = None
        return OnnxModel(session, signature, rename, lone_session)
