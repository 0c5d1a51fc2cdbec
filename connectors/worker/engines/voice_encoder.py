"""A speaker encoder run with numpy alone: Resemblyzer's LSTM (GE2E-trained, 256-d voice embeddings).

The weights ship inside the `resemblyzer` 0.1.4 wheel on PyPI (`resemblyzer/pretrained.pt`, 17 MB, Apache-2.0).
The wheel is fetched with `pip download --no-deps` (never installed: it would pull torch and librosa) and the
weights are extracted once into the cache, verified against ENCODER_SHA256. The file is a torch state dict in
torch's legacy serialisation (a few pickles followed by the raw storages); `read_legacy_torch` reads it with the
standard library and numpy, so nothing here needs torch at run time.

What the network expects, as the package computes it: 16 kHz audio, volume raised to -30 dBFS, a 40-band mel power
spectrogram (25 ms Hann window, 10 ms hop, Slaney mel scale), cut into 1.6 s partials; a 3-layer LSTM (hidden 256)
whose last hidden state goes through a linear layer, ReLU and L2 normalisation.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

RESEMBLYZER_VERSION = "0.1.4"
ENCODER_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
LAYERS = 3
TARGET_DBFS = -30.0
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32}


class EncoderError(BytewaxSpeechmaticsError, RuntimeError):
    """The speaker encoder's weights cannot be had or read; the message says what and where."""


def fetch_encoder(cache_dir: Path) -> Path:
    """The path of the verified `pretrained.pt` in `cache_dir`, fetched from the resemblyzer wheel on first use."""
    target = Path(cache_dir) / f"resemblyzer-{RESEMBLYZER_VERSION}" / "pretrained.pt"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               f"resemblyzer=={RESEMBLYZER_VERSION}", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise EncoderError(f"could not download resemblyzer=={RESEMBLYZER_VERSION} for the speaker encoder "
                               f"(pip exit {done.returncode})")
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read("resemblyzer/pretrained.pt")
        digest = hashlib.sha256(data).hexdigest()
        if digest != ENCODER_SHA256:
            raise EncoderError(f"resemblyzer pretrained.pt has SHA-256 {digest}, expected {ENCODER_SHA256}")
        staged = Path(tmp) / "pretrained.pt"
        staged.write_bytes(data)
        os.replace(staged, target)
    return target


class _Unpickler(pickle.Unpickler):
    """Unpickles a legacy torch checkpoint into plain objects: tensors become ("tensor", storage key, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *_: ("tensor", storage, offset, tuple(size), tuple(stride))
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise EncoderError(f"unexpected class {module}.{name} in the speaker encoder's checkpoint")

    def persistent_load(self, pid: Any) -> Any:
        _, dtype, key, _location, size, _view = pid
        return ("storage", key, dtype, size)


def read_legacy_torch(path: Path) -> dict[str, Any]:
    """The checkpoint at `path` (torch's pre-1.6 format) as nested dicts whose tensors are numpy arrays."""
    with open(path, "rb") as f:
        try:
            magic, protocol, _sys_info = pickle.load(f), pickle.load(f), pickle.load(f)  # noqa: S301 - known file
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing
            raise EncoderError(f"{path}: not a legacy torch checkpoint ({type(exc).__name__})") from exc
        if magic != 0x1950A86A20F9469CFC6C or protocol != 1001:
            raise EncoderError(f"{path}: not a legacy torch checkpoint (magic {magic!r}, protocol {protocol!r})")
        obj = _Unpickler(f).load()
        keys = pickle.load(f)  # noqa: S301
        storages: dict[str, np.ndarray] = {}
        dtypes: dict[str, Any] = {}

        def note(value: Any) -> None:
            if isinstance(value, tuple) and value and value[0] == "tensor":
                dtypes[value[1][1]] = value[1][2]
            elif isinstance(value, dict):
                for v in value.values():
                    note(v)

        note(obj)
        for key in keys:
            count = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            dtype = np.dtype(dtypes.get(key, np.float32))
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype.newbyteorder("<"))

    def build(value: Any) -> Any:
        if isinstance(value, tuple) and value and value[0] == "tensor":
            _, (_, key, _, _), offset, size, stride = value
            base = storages[key]
            item = base.itemsize
            return np.lib.stride_tricks.as_strided(base[offset:], shape=size,
                                                   strides=tuple(s * item for s in stride)).copy()
        if isinstance(value, dict):
            return {k: build(v) for k, v in value.items()}
        return value

    return build(obj)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, hz)


def mel_filters(rate: int = RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters on Slaney's scale, area-normalised (as the encoder was trained)."""
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL = mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """`wav` raised (never lowered) to TARGET_DBFS."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms <= 0:
        return wav
    change = TARGET_DBFS - 20 * np.log10(rms)
    return wav if change < 0 else (wav * (10 ** (change / 20))).astype(np.float32)


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(frames, N_MELS) mel power spectrogram of float audio in [-1, 1], one frame per 10 ms (centred frames)."""
    padded = np.pad(np.asarray(wav, dtype=np.float32), N_FFT // 2)
    n = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(padded, shape=(n, N_FFT), strides=(padded.strides[0] * HOP,
                                                                                 padded.strides[0]))
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    return (power.astype(np.float32) @ _MEL.T).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class VoiceEncoder:
    """Resemblyzer's network over numpy arrays: mel partials in, unit-length 256-d voice embeddings out."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        try:
            self.layers = [(state[f"lstm.weight_ih_l{n}"].T.copy(), state[f"lstm.weight_hh_l{n}"].T.copy(),
                            state[f"lstm.bias_ih_l{n}"] + state[f"lstm.bias_hh_l{n}"]) for n in range(LAYERS)]
            self.linear = (state["linear.weight"].T.copy(), state["linear.bias"])
        except KeyError as exc:
            raise EncoderError(f"the speaker encoder's state has no {exc.args[0]}") from exc

    @classmethod
    def load(cls, path: Path) -> VoiceEncoder:
        checkpoint = read_legacy_torch(path)
        return cls({k: np.asarray(v, dtype=np.float32) for k, v in checkpoint["model_state"].items()})

    def embed_partials(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, N_MELS) -> (batch, 256) unit vectors (zero vectors stay zero).

        The LSTM's matrix products are small (batch x 256 by 256 x 1024, once per step): OpenBLAS's threads cost more
        than they give there (6.6 s against 1.1 s for one window batch on a busy 2-core machine), so they run on one
        BLAS thread (threadpoolctl, in the `[worker]` extra; without it, as numpy is set up).
        """
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return self._embed(mels)
        with threadpool_limits(1, user_api="blas"):
            return self._embed(mels)

    def _embed(self, mels: np.ndarray) -> np.ndarray:
        x = np.asarray(mels, dtype=np.float32)
        batch, steps, _ = x.shape
        for w_ih, w_hh, bias in self.layers:
            hidden = w_hh.shape[0]
            projected = x @ w_ih + bias  # every step's input projection at once
            h = np.zeros((batch, hidden), dtype=np.float32)
            c = np.zeros((batch, hidden), dtype=np.float32)
            out = np.empty((batch, steps, hidden), dtype=np.float32)
            for t in range(steps):
                gates = projected[:, t] + h @ w_hh
                i, f, g, o = np.split(gates, 4, axis=1)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                out[:, t] = h
            x = out
        weight, bias = self.linear
        raw = np.maximum(0.0, x[:, -1] @ weight + bias)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.where(norm > 0, norm, 1.0)
