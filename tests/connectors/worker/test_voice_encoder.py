"""The speaker encoder without torch (engines/voice_encoder.py): its checkpoint reader and its network's arithmetic.

The checkpoint here is written the way torch's legacy serialisation writes one (magic number, protocol, system
info, the object pickled with persistent ids for its storages, the storage keys, then each storage's element count
and raw little-endian data), by a pickler that names torch's classes without importing torch.
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from bytewax.speechmatics.connectors.worker.engines.voice_encoder import (
    EncoderError,
    VoiceEncoder,
    read_legacy_torch,
)


class _Storage:
    def __init__(self, key: str, size: int) -> None:
        self.key, self.size = key, size


class _Tensor:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


def fake_torch(monkeypatch: pytest.MonkeyPatch) -> tuple[type, object]:
    """Modules named `torch` and `torch._utils` holding stand-ins for the two names a checkpoint refers to."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage = type("FloatStorage", (), {"__module__": "torch"})

    def _rebuild_tensor_v2(*args: object) -> None:  # pragma: no cover - only pickled by name
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = storage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return storage, _rebuild_tensor_v2


def write_legacy(path: Path, state: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """`{"model_state": state}` in torch's legacy format."""
    storage_class, rebuild = fake_torch(monkeypatch)

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: object) -> object:
            if isinstance(obj, _Tensor):
                stride = tuple(s // obj.array.itemsize for s in obj.array.strides)
                return rebuild, (_Storage(obj.key, obj.array.size), 0, obj.array.shape, stride, False,
                                 collections.OrderedDict())
            return NotImplemented

        def persistent_id(self, obj: object) -> object:
            if isinstance(obj, _Storage):
                return ("storage", storage_class, obj.key, "cpu", obj.size, None)
            return None

    out = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, out, protocol=2)
    tensors = {name: _Tensor(str(n), np.ascontiguousarray(a, dtype="<f4")) for n, (name, a) in enumerate(state.items())}
    Pickler(out, protocol=2).dump({"model_state": collections.OrderedDict(tensors)})
    pickle.dump([t.key for t in tensors.values()], out, protocol=2)
    for t in tensors.values():
        out.write(np.int64(t.array.size).tobytes())
        out.write(t.array.tobytes())
    path.write_bytes(out.getvalue())


def tiny_state(hidden: int = 4, mels: int = 40, layers: int = 3, rng: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(rng)
    state = {}
    for n in range(layers):
        inputs = mels if n == 0 else hidden
        state[f"lstm.weight_ih_l{n}"] = r.normal(0, 0.3, (4 * hidden, inputs))
        state[f"lstm.weight_hh_l{n}"] = r.normal(0, 0.3, (4 * hidden, hidden))
        state[f"lstm.bias_ih_l{n}"] = r.normal(0, 0.1, 4 * hidden)
        state[f"lstm.bias_hh_l{n}"] = r.normal(0, 0.1, 4 * hidden)
    state["linear.weight"] = r.normal(0, 0.3, (hidden, hidden))
    state["linear.bias"] = r.normal(1.0, 0.1, hidden)  # positive: the ReLU keeps every component
    return state


def lstm_reference(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The network written out step by step, one sequence at a time (torch.nn.LSTM's gate order i, f, g, o)."""
    def sig(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    seq = x.astype(np.float64)
    for n in range(3):
        w_ih, w_hh = state[f"lstm.weight_ih_l{n}"], state[f"lstm.weight_hh_l{n}"]
        b = state[f"lstm.bias_ih_l{n}"] + state[f"lstm.bias_hh_l{n}"]
        h = np.zeros(w_hh.shape[1])
        c = np.zeros(w_hh.shape[1])
        outs = []
        for step in seq:
            gates = w_ih @ step + w_hh @ h + b
            i, f, g, o = np.split(gates, 4)
            c = sig(f) * c + sig(i) * np.tanh(g)
            h = sig(o) * np.tanh(c)
            outs.append(h)
        seq = np.array(outs)
    raw = np.maximum(0, state["linear.weight"] @ seq[-1] + state["linear.bias"])
    return raw / np.linalg.norm(raw)


def test_a_legacy_checkpoint_reads_back_without_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tiny_state()
    write_legacy(tmp_path / "w.pt", state, monkeypatch)
    monkeypatch.undo()  # the reader runs with no module named torch
    back = read_legacy_torch(tmp_path / "w.pt")["model_state"]
    assert set(back) == set(state)
    for name, array in state.items():
        np.testing.assert_allclose(back[name], array.astype(np.float32))


def test_the_encoder_computes_what_the_lstm_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tiny_state()
    write_legacy(tmp_path / "w.pt", state, monkeypatch)
    monkeypatch.undo()
    encoder = VoiceEncoder.load(tmp_path / "w.pt")
    x = np.random.default_rng(1).normal(0, 1, (3, 12, 40)).astype(np.float32)
    got = encoder.embed_partials(x)
    for row, sequence in zip(got, x, strict=True):
        np.testing.assert_allclose(row, lstm_reference(state, sequence), atol=1e-4)


def test_anything_else_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "zip.pt").write_bytes(b"PK\x03\x04 not a legacy checkpoint")
    with pytest.raises(EncoderError, match="not a legacy torch checkpoint"):
        read_legacy_torch(tmp_path / "zip.pt")
