"""llama-imatrix's statistics computed in-process: the model runs in llama.cpp (llama-cpp-python) over a
calibration text, and llama.cpp's graph-evaluation callback sees every matrix multiplication's input.

This follows tools/imatrix/imatrix.cpp of the llama.cpp that llama-cpp-python builds, so the result
is what `llama-imatrix -m FILE -f TEXT -c CTX` would write for the same file:
- the text loses one trailing newline (common/arg.cpp, -f) and is tokenized once with the special
  tokens added and not parsed (compute_imatrix: common_tokenize(..., true, parse_special=false));
- it is cut into len(ids) // ctx chunks of ctx tokens; each chunk's first token becomes BOS when the
  vocabulary adds one; each chunk is decoded from an empty cache with every position an output (so
  the last layer runs for every token);
- collect_imatrix (ask): every GGML_OP_MUL_MAT_ID, and every GGML_OP_MUL_MAT of an F32 input of at
  least 16 rows whose weight is named "blk.*" (so output.weight and token_embd, a row lookup, get no
  entry: llama-imatrix's default, without --process-output);
- collect_imatrix (collect): a dense weight adds each input row's squared values to its sums and
  the rows to its one count; an expert tensor (MUL_MAT_ID) adds, for each token and each expert the
  router chose for it, that token's input to the chosen expert's sums and one to its count.
llama.cpp memory-maps the file, so what the calibration holds is the KV cache and compute buffers of
one ctx-token chunk plus the weight pages the OS keeps; the statistics themselves are a few MB.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ...core.errors import ModelConversionError, UsageError
from ...core.progress import progress_bar
from ...runtimes.llama_cpp import _quiet_stderr
from .imatrix import Entry, Imatrix

BUILTIN = "builtin"
DEFAULT_CTX = 512
MAX_UBATCH = 512        # llama-imatrix's default physical batch (common.h n_ubatch)
MIN_ROWS = 16           # collect_imatrix skips smaller multiplications ("why are small batches ignored?")
MAX_DIMS, MAX_OP_PARAMS, MAX_SRC, MAX_NAME = 4, 64, 10, 64


@dataclass(frozen=True)
class CalibrationSettings:
    """`--imatrix-corpus FILE|builtin [--imatrix-ctx N] [--imatrix-tokens N]` as given."""

    corpus: str
    ctx: int = DEFAULT_CTX
    tokens: int | None = None       # None: every whole chunk of the text, as llama-imatrix does

    def __post_init__(self) -> None:
        if self.ctx < MIN_ROWS:
            raise UsageError(f"--imatrix-ctx {self.ctx}: llama-imatrix records no batch under {MIN_ROWS} tokens")
        if self.tokens is not None and self.tokens < self.ctx:
            raise UsageError(f"--imatrix-tokens {self.tokens} is less than one chunk (--imatrix-ctx {self.ctx})")
        if self.corpus != BUILTIN and not Path(self.corpus).expanduser().is_file():
            raise UsageError("--imatrix-corpus: no such file (a text file, or 'builtin')", Path(self.corpus).expanduser())

    @property
    def name(self) -> str:
        """What the imatrix records as its dataset (llama-imatrix: the -f path as given)."""
        return self.corpus

    def text(self) -> str:
        if self.corpus == BUILTIN:
            text = resources.files("modelport").joinpath("data", "quality.txt").read_text(encoding="utf-8")
        else:
            path = Path(self.corpus).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(f"--imatrix-corpus is not UTF-8 text (byte {exc.start})", path) from None
        return text[:-1] if text.endswith("\n") else text


class GGMLTensor(ctypes.Structure):
    """struct ggml_tensor (ggml/include/ggml.h): the fields the callback reads."""


GGMLTensor._fields_ = [
    ("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * MAX_DIMS), ("nb", ctypes.c_size_t * MAX_DIMS),
    ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)), ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GGMLTensor) * MAX_SRC), ("view_src", ctypes.c_void_p), ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p), ("name", ctypes.c_char * MAX_NAME), ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]
GGML_TYPE_F32 = 0


def _weight_name(raw: bytes) -> str:
    """filter_tensor_name: "CUDA0#blk.0.attn_k.weight#0" -> "blk.0.attn_k.weight"."""
    name = raw.decode("utf-8", errors="replace")
    if "#" in name:
        name = name.split("#")[1]
    return name


class Collector:
    """collect_imatrix: sums and counts per weight, from the tensors the callback is shown."""

    def __init__(self, ggml: ctypes.CDLL) -> None:
        self.ggml = ggml
        names = {}
        for op in range(200):
            name = ggml.ggml_op_name(op)
            if name is None:
                break
            names[name.decode()] = op
        self.mul_mat, self.mul_mat_id = names["MUL_MAT"], names["MUL_MAT_ID"]
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.error: BaseException | None = None

    def __call__(self, pointer: int, ask: bool, _user: int) -> bool:
        try:
            t = GGMLTensor.from_address(pointer)
            if ask:
                return self._wanted(t)
            self._collect(t)
            return True
        except BaseException as exc:           # a C callback cannot raise: keep the first error, stop collecting
            self.error = self.error or exc
            return False

    def _wanted(self, t: GGMLTensor) -> bool:
        if t.op == self.mul_mat_id:
            return True
        if t.op != self.mul_mat:
            return False
        src1 = t.src[1].contents
        return src1.ne[1] >= MIN_ROWS and src1.type == GGML_TYPE_F32 and \
            _weight_name(t.src[0].contents.name).startswith("blk.")

    def _array(self, t: GGMLTensor, dtype) -> np.ndarray:
        """The tensor's values as numpy, [ne3, ne2, ne1, ne0], from a copy of its bytes (any backend)."""
        size = self.ggml.ggml_nbytes(ctypes.byref(t))
        raw = np.empty(size, dtype=np.uint8)
        self.ggml.ggml_backend_tensor_get(ctypes.byref(t), raw.ctypes.data, 0, size)
        return np.lib.stride_tricks.as_strided(raw.view(dtype), shape=tuple(reversed(t.ne[:])),
                                               strides=tuple(reversed(t.nb[:])))

    def _collect(self, t: GGMLTensor) -> None:
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = _weight_name(src0.name)
        x = self._array(src1, np.float32)          # squared and summed in float32 per call (as llama-imatrix sums), kept in float64
        cols = src1.ne[0]
        if t.op == self.mul_mat_id:
            n_as = src0.ne[2]
            ids = self._array(t.src[2].contents, np.int32)[0, 0]          # [tokens, experts used]
            sums = self.sums.setdefault(name, np.zeros((n_as, cols)))
            counts = self.counts.setdefault(name, np.zeros(n_as))
            x = x[0]                                                      # [tokens, n_expert_used or 1, cols]
            for slot in range(ids.shape[1]):
                rows = x[:, slot % x.shape[1], :]
                chosen = ids[:, slot]
                np.add.at(sums, chosen, rows * rows)
                np.add.at(counts, chosen, 1)
        else:
            n_mat = src0.ne[2] * src0.ne[3]
            sums = self.sums.setdefault(name, np.zeros((n_mat, cols)))
            counts = self.counts.setdefault(name, np.zeros(1))
            for i3 in range(x.shape[0]):
                for i2 in range(x.shape[1]):
                    mat = (i3 % src0.ne[3]) * src0.ne[2] + (i2 % src0.ne[2])
                    sums[mat] += np.einsum("rc,rc->c", x[i3, i2], x[i3, i2])
            counts += x.shape[0] * x.shape[1] * x.shape[2] // n_mat
        if not np.isfinite(sums).all():
            raise ModelConversionError(f"non-finite activations reach {name}")


def _ggml() -> ctypes.CDLL:
    from .quantize import libggml
    lib = libggml()
    if lib is None:
        raise ModelConversionError("--imatrix-corpus needs llama.cpp (install llama-cpp-python)")
    lib.ggml_op_name.argtypes, lib.ggml_op_name.restype = [ctypes.c_int], ctypes.c_char_p
    lib.ggml_nbytes.argtypes, lib.ggml_nbytes.restype = [ctypes.c_void_p], ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    return lib


def compute(model_path: Path, settings: CalibrationSettings, threads: int = 2) -> Imatrix:
    """The imatrix of the GGUF `model_path` over the settings' text, as llama-imatrix computes it."""
    import llama_cpp

    collector = Collector(_ggml())
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)
    text = settings.text()
    with _quiet_stderr():
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), mparams)
    if not model:
        raise ModelConversionError("llama.cpp cannot load it for the imatrix run", model_path)
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        ids = _tokenize(llama_cpp, vocab, text)
        bos = llama_cpp.llama_vocab_bos(vocab) if llama_cpp.llama_vocab_get_add_bos(vocab) else None
        sequences = chunks(ids, settings, bos)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = settings.ctx
        cparams.n_ubatch = min(settings.ctx, MAX_UBATCH)
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.cb_eval = callback
        cparams.cb_eval_user_data = None
        with _quiet_stderr():
            ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            raise ModelConversionError(f"llama.cpp cannot make a context of {settings.ctx} tokens", model_path)
        try:
            _run(llama_cpp, ctx, sequences, collector, model_path)
        finally:
            llama_cpp.llama_free(ctx)
    finally:
        llama_cpp.llama_model_free(model)
    entries = {name: Entry(sums.astype(np.float32), collector.counts[name].astype(np.float32))
               for name, sums in collector.sums.items()}
    return Imatrix(entries, [settings.name], len(sequences), settings.ctx)


def _tokenize(llama_cpp, vocab, text: str) -> list[int]:
    data = text.encode("utf-8")
    room = len(data) + 16
    buffer = (llama_cpp.llama_token * room)()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, room, True, False)
    if count < 0:
        raise ModelConversionError(f"llama.cpp's tokenizer needs {-count} ids for the corpus, more than {room}")
    return list(buffer[:count])


def chunks(ids: list[int], settings: CalibrationSettings, bos: int | None) -> list[list[int]]:
    """llama-imatrix's chunks of the text's ids: len(ids) // ctx of ctx tokens (no more than
    --imatrix-tokens allows), each starting with BOS when the vocabulary adds one."""
    count = len(ids) // settings.ctx
    if settings.tokens is not None:
        count = min(count, settings.tokens // settings.ctx)
    if count == 0:
        raise UsageError(f"--imatrix-corpus {settings.corpus} gives {len(ids)} tokens, less than one chunk of "
                         f"--imatrix-ctx {settings.ctx}")
    out = [ids[k * settings.ctx:(k + 1) * settings.ctx] for k in range(count)]
    if bos is not None:
        for chunk in out:
            chunk[0] = bos
    return out


def _run(llama_cpp, ctx, sequences: list[list[int]], collector: Collector, model_path: Path) -> None:
    n_ctx = len(sequences[0])
    batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
    try:
        with progress_bar(len(sequences), "imatrix") as bar:
            for chunk, tokens in enumerate(sequences):
                llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
                batch.n_tokens = n_ctx
                for i, token in enumerate(tokens):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, 1
                    batch.seq_id[i][0] = 0
                with _quiet_stderr():
                    status = llama_cpp.llama_decode(ctx, batch)
                if collector.error is not None:
                    raise ModelConversionError(f"the imatrix callback failed: {collector.error}", model_path)
                if status != 0:
                    raise ModelConversionError(f"llama.cpp failed to evaluate chunk {chunk} ({status})", model_path)
                bar.update(1)
    finally:
        llama_cpp.llama_batch_free(batch)
