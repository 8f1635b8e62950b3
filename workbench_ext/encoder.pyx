"""A whole post-LN encoder in one call: ``Int8Encoder(layers).run(h, B, S, mask_bias, isa)``, or
``run_packed(h, lengths, isa)`` for sequences without their padding, or a few layers at a time
(``run_layers``, with the attention significance) for token dropping and early exits; built with
the embeddings and the classifier head, a whole forward from token ids to logits (``classify``).

Every layer -- fused QKV, attention over all heads, attention output, bias + residual +
LayerNorm, FFN input with GELU in its epilogue, FFN output, bias + residual + LayerNorm -- runs
here in compiled code on the int8 kernels' C entry points (``_Int8Linear.forward_into``,
``wb_attention``, ``wb_layernorm``): no Python between the ops, and no NumPy allocation: one set
of buffers for the whole encoder (the layers run one after another) is kept and reused while it
is large enough, and grows to the largest batch seen (padded batches' sizes vary from call to
call; a new set each time would fault its pages in each time). Each op is one parallel loop on
the kernels' pool (the Linears: quantization, then the kernel).
The last layer computes only the [CLS] row of every sequence (what the classifier reads).

``layers``: one dict per layer with ``qkv`` / ``out`` / ``ffn1`` / ``ffn2`` (each a list of
``(from_rows, _Int8Linear)``: the kernel to use from that many rows on, see
workbench.runtime.choice.RowSwitch), ``heads``, ``head_dim``, ``out_bias`` / ``ffn2_bias``,
``ln1`` / ``ln2`` = (gamma, beta, eps). ``attention``: "fp32", "bf16" or "int8"
(workbench_ext.attention's ``precision``). ``embeddings`` / ``heads`` (both or neither; see
``_Ends`` in encoder_ends.pxi): the embedding tables and LayerNorm, and the classifier's head
("head") with any exit heads, for ``classify``, ``embed`` and ``head``. The outputs are
bit-identical to running the same kernels one Python call at a time (tests/test_runtime.py,
tests/test_runtime_whole_forward.py).

Concurrent calls (another thread while the kernels have released the GIL) get their own
buffers for that call instead of sharing the kept ones.
"""

include "_pool_bind.pxi"
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, int32_t, int64_t
from libc.string cimport memcpy

from workbench_ext.attention cimport wb_attention, wb_attn_t, wb_layernorm, wb_ln_avx2_only, wb_threads
from workbench_ext.attention import check_precision
from workbench_ext.int8 cimport _Int8Linear, aligned_bytes, scratch_bytes

cnp.import_array()

cdef extern from "Python.h":
    int PyGC_Enable()
    int PyGC_Disable()

cdef extern from "wb_common.h" nogil:
    int wb_max_threads()
    void wb_set_threads(int n)

cdef inline void* _ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline float* _fp(object a):
    return <float*>cnp.PyArray_DATA(<cnp.ndarray>a)


from workbench_ext.cpu import ISA_CODES as _ISA_CODES, active_isa as _active_isa
from workbench_ext.pool import wake as _pool_wake


include "encoder_buffers.pxi"
include "encoder_drop.pxi"
include "encoder_ends.pxi"
include "_scan_batch.pxi"
include "encoder_checks.pxi"
include "encoder_layers.pxi"


cdef class Int8Encoder:
    cdef list layers
    cdef int H, max_qkv, max_ctx, max_ffn
    cdef tuple kps
    cdef _Buffers _kept
    cdef bint _busy
    cdef int attention_precision
    cdef _Ends ends
    cdef long call_vocab, call_types, call_max_len   # forward_call's input ranges (set_input_ranges)

    def __init__(self, list layers, int hidden_size, attention="fp32", embeddings=None, heads=None):
        """embeddings / heads: both or neither (see _Ends): with them, `classify` runs a whole
        forward, and `head` any of the heads."""
        self.attention_precision = check_precision(attention)
        if not layers:
            raise ValueError("Int8Encoder needs at least one layer")
        for i, layer in enumerate(layers):
            for role in ("qkv", "out", "ffn1", "ffn2"):
                for _, lin in layer[role]:
                    if not isinstance(lin, _Int8Linear):
                        raise TypeError(f"layer {i} {role}: expected a workbench_ext.int8 layer, got {type(lin).__name__}")
            if layer["heads"] < 1 or layer["ffn1"][0][1].N < 1:
                raise ValueError(f"layer {i}: removed attention or FFN blocks run on the Python path")
        self.layers = layers
        self.H = hidden_size
        self.max_qkv = max(l["qkv"][0][1].N for l in layers)
        self.max_ctx = max(l["out"][0][1].K for l in layers)
        self.max_ffn = max(l["ffn1"][0][1].N for l in layers)
        if (embeddings is None) != (heads is None):
            raise ValueError("embeddings and heads go together: give both or neither")
        self.ends = None if heads is None else _Ends(embeddings, heads, hidden_size)
        kps = {lin.Kp for l in layers for r in ("qkv", "out", "ffn1", "ffn2") for _, lin in l[r]}
        self.kps = tuple(sorted(kps | set(self.ends.kps() if self.ends is not None else ())))
        self._kept = None
        self._busy = False
        self.call_vocab = self.call_types = self.call_max_len = 0

    def run(self, h, int B, int S, mask_bias, int isa):
        """h float32 [B*S, H] (the embeddings, C-contiguous), mask_bias float32 [B, S] additive
        (0 / dtype-min), isa the workbench_ext.cpu ISA code -> the [CLS] rows [B, H] after the
        last layer (a new array)."""
        return self._call(h, B, S, mask_bias, isa, None, 0, len(self.layers), True, None, None, None)

    def run_packed(self, h, lengths, int isa):
        """Sequences without their padding: h float32 [T, H] (C-contiguous) holds the embeddings
        of B sequences one after another, lengths [B] their token counts (each >= 1, summing to
        T) -> the [CLS] rows [B, H] after the last layer (a new array).

        Each sequence's attention runs over its own tokens only, so no row of work is spent on
        padding, and every sequence gets the same bits as when it runs alone (`run` at batch 1
        and its own length): a sequence's outputs do not depend on what it is batched with."""
        offs = _packed_offsets(h, lengths, self.H)
        B = offs.size - 1
        return self._call(h, B, int(np.diff(offs).max()), None, isa, offs, 0, len(self.layers), True, None, None, None)

    @property
    def classifies(self):
        """Whether this encoder was built with the embeddings and the head (`classify`)."""
        return self.ends is not None

    def classify(self, ids, tt, lengths, mask_bias, int isa):
        """The whole forward, token ids to logits [B, labels] (a new array), in one call: `run` or
        `run_packed` between the embeddings and the head, with their bits. ids / tt: int64
        [B, S] C-contiguous (tt None: token type 0). lengths None: the B x S rows, masked by
        mask_bias (float32 [B, S] additive); else [B] token counts: each row's first tokens,
        packed (mask_bias unused)."""
        if self.ends is None:
            raise ValueError("this encoder was built without embeddings and a head: classify needs both")
        offs, mask_bias, B, S, M = _classify_rows(ids, tt, lengths, mask_bias)
        return self._classify(ids, tt, offs, mask_bias, B, S, M, isa)

    def classify_tokens(self, ids, mask, tt, long vocab, long types, bint pack, int threads, int isa):
        """`classify` with the runtime's input check (workbench.runtime.inputs) in the same call,
        for the two common layouts, so a batch-1 forward runs no Python and no NumPy between the
        caller and the kernels. ids / mask / tt: int64 [B, S] C-contiguous (mask None: all
        tokens; tt None: type 0); vocab / types: the id and token-type ranges. A mask with no
        padding runs the B x S rows; one where each row is its tokens then padding (at least
        one token) runs packed when `pack`, as `Engine.pack_sequences` asks.

        Returns (logits [B, labels], counts int64 [B] each row's tokens, packed), with the bits
        of `classify` on what the runtime's check lays out; None, before any work, when a value
        is out of range or the mask has another layout: the caller's check then names the value
        or lays the batch out. threads > 0: the kernels' thread count for this call (else the
        default). Python's cyclic GC is off during the call, as the runtime's forward has it."""
        if self.ends is None:
            raise ValueError("this encoder was built without embeddings and a head: classify needs both")
        return self._classify_tokens(ids, mask, tt, vocab, types, pack, threads, isa)

    def set_input_ranges(self, long vocab, long types, long max_len):
        """The id range, token-type range (0: the model has no token types, so a given
        token_type_ids goes to the caller's check) and longest sequence `forward_call` accepts:
        the engine's, set once."""
        if vocab < 1 or types < 0 or max_len < 1:
            raise ValueError(f"input ranges must be vocab >= 1, types >= 0, max_len >= 1; got {vocab}, {types}, {max_len}")
        self.call_vocab, self.call_types, self.call_max_len = vocab, types, max_len

    def forward_call(self, ids, mask, tt, bint pack, int threads):
        """`Engine.__call__`'s static forward in one compiled call: wakes the kernels' pool, checks
        the arrays' types and shapes and reads the ISA in C, then `classify_tokens` on the ranges
        of `set_input_ranges` (the engine's Python checks there cost 36-53 us on caches the last
        forward had filled, results/bench/spr-amx/call-overhead/). Returns (logits, counts,
        packed, S), or None before any work for anything else (not int64 C-contiguous [B, S] of
        one shape, S too long, token types on a model without them, a value out of range, another
        mask layout): the engine's checked path then names the value or lays the batch out."""
        _pool_wake()   # a sleeping worker's wake-up overlaps the checks
        if self.ends is None or self.call_vocab < 1 or not _is_i64_matrix(ids):
            return None
        cdef cnp.npy_intp *shape = cnp.PyArray_DIMS(<cnp.ndarray>ids)
        if not (0 < shape[1] <= self.call_max_len):
            return None
        if mask is not None and not _same_i64_matrix(mask, shape):
            return None
        if tt is not None and (self.call_types == 0 or not _same_i64_matrix(tt, shape)):
            return None
        cdef int isa = _ISA_CODES[_active_isa()]
        out = self._classify_tokens(ids, mask, tt, self.call_vocab, self.call_types or 1, pack, threads, isa)
        if out is None:
            return None
        logits, counts, packed = out
        return logits, counts, packed, shape[1]

    cdef object _classify_tokens(self, object ids, object mask, object tt, long vocab, long types, bint pack,
                                 int threads, int isa):
        """classify_tokens, on an encoder with its ends."""
        cdef int before = wb_max_threads()
        cdef bint set_threads = threads > 0 and threads != before
        cdef int gc_was = PyGC_Disable()
        try:
            rows = _token_rows(ids, mask, tt, vocab, types, pack)
            if rows is None:
                return None
            offs, mask_bias, counts, B, S, M = rows
            if set_threads:
                wb_set_threads(threads)
            return self._classify(ids, tt, offs, mask_bias, B, S, M, isa), counts, offs is not None
        finally:
            if set_threads:
                wb_set_threads(before)
            if gc_was:
                PyGC_Enable()

    cdef object _classify(self, object ids, object tt, object offs, object mask_bias, int B, int S, int M,
                          int isa):
        """classify on checked rows (`_classify_rows`' layout), in `_acquire`'s buffers."""
        cdef _Buffers buf = self._acquire(B, M)
        try:
            x = self.ends.embed(buf, ids, tt, <const int*>_ptr(offs) if offs is not None else NULL, B, S, isa,
                                wb_threads(0))
            cls = _run_layers(self.layers, self.H, self.attention_precision, buf, x, B, S, M, mask_bias, isa, offs, 0,
                              len(self.layers), True, None, None, None)
            return self.ends.head(buf, "head", cls, B, isa)
        finally:
            self._release(buf)

    def head(self, str name, cls_rows):
        """Head `name`'s logits [B, labels] (a new array) of rows float32 [B, H] (C-contiguous):
        the classifier's ("head", classify's last step) or an exit head's ("exit.<layer>")."""
        if self.ends is None or name not in self.ends.heads:
            raise ValueError(f"this encoder has no head {name!r}; it has {sorted(self.ends.heads) if self.ends else []}")
        check_array(cls_rows, "cls_rows", np.float32, 2)
        if cls_rows.shape[1] != self.H or cls_rows.shape[0] < 1:
            raise ValueError(f"cls_rows must be [B >= 1, {self.H}], got {cls_rows.shape}")
        cdef int B = cls_rows.shape[0]
        cdef _Buffers buf = self._acquire(B, B)
        try:
            return self.ends.head(buf, name, cls_rows, B)
        finally:
            self._release(buf)

    def embed(self, ids, tt, lengths, int isa):
        """classify's first step alone: the embeddings' LayerNorm output [T, H] (a new array) of
        each row's first lengths[b] tokens, packed (token dropping and exits start here)."""
        if self.ends is None:
            raise ValueError("this encoder was built without embeddings and a head: embed needs both")
        if lengths is None:
            raise ValueError("embed needs the lengths: each row's token count")
        offs, _, B, S, M = _classify_rows(ids, tt, lengths, None)
        cdef _Buffers buf = self._acquire(B, M)
        try:
            x = self.ends.embed(buf, ids, tt, <const int*>_ptr(offs), B, S, isa, wb_threads(0))
            return np.array(x[:M * self.H].reshape(M, self.H))
        finally:
            self._release(buf)

    def run_layers(self, h, lengths, int first, int stop, int isa, sig=None, bint cls_only=False,
                   keep=None, chosen=None):
        """Layers first .. stop-1 on packed sequences (h, lengths as in `run_packed`) -> the last
        one's rows [T, H] (a new array), or with `cls_only` its [CLS] rows [B, H] (that layer then
        computes only those). Token dropping and early exits (workbench.runtime.dynamic_forward) run the
        encoder a few layers at a time this way, changing the rows in between.

        sig: None, or float32 [nh * T'] (C-contiguous; nh: layer stop-1's heads, T' its rows:
        T, or fewer after drops; not with `cls_only`), set to layer stop-1's attention
        significance: sequence b's block [nh, its rows] starts at nh * (the rows before it) and
        holds each key's probabilities summed over the sequence's queries, per head. The same bits as
        workbench_ext.attention's `significance` on that sequence alone.

        keep: None, or int32 [stop - first - 1, B]: token dropping between the layers. After
        layer first + t, sequence b keeps its keep[t, b] most significant tokens (its [CLS]
        first, then by the significance summed over the heads, head 0 first; ties to the lower
        position; in their order), gathered so the next layer runs on those rows only: the rule
        of workbench.runtime.dynamic_forward.select, here without leaving compiled code. A count
        >= the sequence's tokens keeps them all. chosen: with keep, int32 with room for every
        kept token of every drop, set to each drop's kept positions (within the sequence's rows
        before it), drop after drop, sequence after sequence. The rows returned are then the
        kept ones, sum(keep[-1]) (or B with cls_only)."""
        cdef int L = len(self.layers)
        if not 0 <= first < stop <= L:
            raise ValueError(f"layers {first}..{stop - 1}: need 0 <= first < stop <= {L}")
        offs = _packed_offsets(h, lengths, self.H)
        B = offs.size - 1
        seq_lens = np.diff(offs)
        drops, counts = _drop_plan(keep, chosen, first, stop, seq_lens)   # counts: rows at layer stop-1
        if sig is not None:
            _check_sig(sig, self.layers[stop - 1]["heads"] * int(counts.sum()), cls_only)
        return self._call(h, B, int(seq_lens.max()), None, isa, offs, first, stop, cls_only, sig, drops, chosen)

    cdef _Buffers _acquire(self, int B, int M):
        """The kept buffers when they are free and large enough, else new ones (kept when free);
        marks the kept ones busy until `_release`."""
        cdef _Buffers buf
        own = not self._busy
        if own and self._kept is not None and self._kept.B >= B and self._kept.M >= M:
            buf = self._kept
        else:
            cap_b, cap_m = B, M
            if own and self._kept is not None:   # grow: packed batches' sizes vary call to call
                cap_b, cap_m = max(B, self._kept.B), max(M, self._kept.M)
            buf = _Buffers(cap_b, cap_m, self.H, self.max_qkv, self.max_ctx, self.max_ffn, self.kps)
            if own:
                self._kept = buf
        if own:
            self._busy = True
        return buf

    cdef void _release(self, _Buffers buf):
        if buf is self._kept:
            self._busy = False

    cdef object _call(self, object h, int B, int S, object mask_bias, int isa, object offs,
                      int first, int stop, bint cls_last, object sig, object drops, object chosen):
        """The layers first .. stop-1 on h, in `_acquire`'s buffers."""
        cdef int M = int(offs[B]) if offs is not None else B * S
        cdef _Buffers buf = self._acquire(B, M)
        try:
            if mask_bias is None:  # packed: no padding to mask
                mask_bias = np.zeros(S, np.float32)
            return _run_layers(self.layers, self.H, self.attention_precision, buf, h, B, S, M, mask_bias, isa, offs,
                               first, stop, cls_last, sig, drops, chosen)
        finally:
            self._release(buf)
