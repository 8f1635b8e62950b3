# The compiled encoder's two ends, for a whole forward in one call (Int8Encoder.classify): the
# embeddings (lookup, token types, LayerNorm) of exactly the rows the layers run, and the
# classifier head on the [CLS] rows. Included by encoder.pyx, after encoder_buffers.pxi.
#
# Why: at batch 1 on short inputs the Python around the encoder call -- the embeddings' three
# kernel calls and reshapes, the padding's removal, the head's two Linears and tanh -- took about
# a fifth of a forward (the demo's 4-layer student at 26 tokens, Zen 4).

from libc.stdint cimport int64_t

from workbench_ext import cpu as _cpu
from workbench_ext._validate cimport check_array

cdef extern from "wb_embed.h" nogil:
    void wb_embed_rows(const void *table, int half, const int64_t *ids, long n, int H,
                       const float *add, const int64_t *add_ids, float *y, int f16c, int nt)

cdef extern from "wb_ops.h" nogil:
    void wb_tanh(const float *x, float *y, size_t n)
    void wb_gelu(const float *x, float *y, size_t n, int isa, int nt)

HEAD_ACTIVATIONS = ("relu", "tanh", "gelu")
"""Between a head's two Linears: ReLU (DistilBERT), tanh (BERT's pooler, RoBERTa, exit heads),
erf GELU (ELECTRA), each as `workbench_ext.ops` computes it."""

cdef bint _HAS_F16C = bool(_cpu.features().get("f16c"))


cdef object _table(object a, str name, int H, bint half_ok=False):
    """a float32 (half_ok: or float16) [rows >= 1, H] table, checked."""
    check_array(a, name, np.float16 if half_ok and getattr(a, "dtype", None) == np.float16 else np.float32, 2)
    if a.shape[1] != H or a.shape[0] < 1:
        raise ValueError(f"embeddings {name}: expected [rows >= 1, {H}], got {tuple(a.shape)}")
    return a


cdef object _vector(object a, str name, int H):
    check_array(a, name, np.float32, 1)
    if a.shape[0] != H:
        raise ValueError(f"embeddings {name}: expected [{H}], got {tuple(a.shape)}")
    return a


cdef class _Head:
    """A classifier head: ``pre`` / ``cls`` (lists of (from_rows, _Int8Linear), as the layers'),
    and its ``activation`` between them (`HEAD_ACTIVATIONS`)."""
    cdef list pre, cls
    cdef int act
    cdef int labels

    def __init__(self, str name, dict head, int H):
        for role in ("pre", "cls"):
            for _, lin in head[role]:
                if not isinstance(lin, _Int8Linear):
                    raise TypeError(f"{name} {role}: expected a workbench_ext.int8 layer, got {type(lin).__name__}")
        if head.get("activation") not in HEAD_ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {HEAD_ACTIVATIONS}, got {head.get('activation')!r}")
        self.pre, self.cls, self.act = head["pre"], head["cls"], HEAD_ACTIVATIONS.index(head["activation"])
        if self.pre[0][1].K != H or self.cls[0][1].K != self.pre[0][1].N:
            raise ValueError(f"{name}: pre must take {H} inputs and cls pre's {self.pre[0][1].N} outputs")
        self.labels = self.cls[0][1].N


cdef class _Ends:
    """The embeddings and the heads, as `workbench.runtime.engine.Engine._embed` / `_head` compute
    them (the same kernels, in the same order: the same bits).

    embeddings: ``word`` [V, E] (float32 / float16), ``position`` [P, E], ``token_type`` [T, E] or
    None, ``gamma`` / ``beta`` [E], ``eps``, ``padding_idx`` (None: positions 0.. along the row;
    an int: RoBERTa's, padding_idx + 1 + the count of non-padding ids so far, padding_idx on
    padding ids), ``project``: None (E = H), or the Linear from E to the layers' H after the
    LayerNorm (ELECTRA-small; a list of (from_rows, _Int8Linear), as the layers'; E <= H).
    heads: name -> dict(pre, cls, activation) (`_Head`); "head" is the classifier's,
    the others (the engine's exit heads, "exit.<layer>") are called by name (`Int8Encoder.head`)."""
    cdef object word, position, token_type, gamma, beta
    cdef list project
    cdef float eps
    cdef long padding_idx
    cdef int half, H, E
    cdef dict heads

    def __init__(self, dict embeddings, dict heads, int H):
        self.H = H
        self.project = embeddings.get("project")
        for _, lin in self.project or ():
            if not isinstance(lin, _Int8Linear):
                raise TypeError(f"embeddings project: expected a workbench_ext.int8 layer, got {type(lin).__name__}")
        cdef int E = self.project[0][1].K if self.project else H
        if self.project and (self.project[0][1].N != H or E > H):
            # E <= H: the embeddings' rows [M, E] sit in buffers sized for [M, H]
            raise ValueError(f"embeddings project: must take E <= {H} inputs to {H} outputs, got "
                             f"{self.project[0][1].K} -> {self.project[0][1].N}")
        self.E = E
        self.word = _table(embeddings["word"], "word", E, True)
        self.half = self.word.dtype == np.float16
        self.position = _table(embeddings["position"], "position", E)
        tt = embeddings.get("token_type")
        self.token_type = None if tt is None else _table(tt, "token_type", E)
        self.gamma = _vector(embeddings["gamma"], "gamma", E)
        self.beta = _vector(embeddings["beta"], "beta", E)
        self.eps = embeddings["eps"]
        pad = embeddings.get("padding_idx")
        self.padding_idx = -1 if pad is None else int(pad)
        if "head" not in heads:
            raise ValueError(f"heads must include the classifier's, \"head\"; got {sorted(heads)}")
        self.heads = {name: _Head(name, h, H) for name, h in heads.items()}

    cdef list kps(self):
        return ([lin.Kp for h in self.heads.values() for r in ((<_Head>h).pre, (<_Head>h).cls) for _, lin in r]
                + [lin.Kp for _, lin in self.project or ()])

    cdef object embed(self, _Buffers buf, object ids, object tt, const int *off, int B, int S, int isa, int nt):
        """The embeddings' LayerNorm output (projected to H when there is a projection) of the
        rows the layers run -- every [B, S] position (off NULL), or sequence b's first
        off[b+1] - off[b] tokens, one sequence after another -- in buf.outs[1] (layer 0 writes
        outs[0]). ids / tt: int64 [B, S] (tt may be None); an id, token type or position outside
        its table is a ValueError before any work."""
        cdef const int64_t[:, ::1] I = ids
        cdef const int64_t[:, ::1] TT = tt
        cdef int64_t *rid = <int64_t*>_ptr(buf.tokens)
        cdef int64_t *rpos = rid + buf.M
        cdef int64_t *rtt = rpos + buf.M
        cdef long V = self.word.shape[0], P = self.position.shape[0]
        cdef long NT = 1 if self.token_type is None else self.token_type.shape[0]
        cdef long pad = self.padding_idx, v, seen, t
        cdef int b, j, n, h, E = self.E   # the tables' width
        cdef long r = 0
        for b in range(B):
            n = off[b + 1] - off[b] if off != NULL else S
            seen = 0
            for j in range(n):
                v = I[b, j]
                if v < 0 or v >= V:
                    raise ValueError(f"input_ids must be in [0, {V}), got {v}")
                rid[r] = v
                if pad < 0:
                    rpos[r] = j
                elif v != pad:
                    seen += 1
                    rpos[r] = pad + seen
                else:
                    rpos[r] = pad
                if rpos[r] >= P:
                    raise ValueError(f"position {rpos[r]} is past the {P} position embeddings")
                t = 0 if tt is None else TT[b, j]
                if t < 0 or t >= NT:
                    raise ValueError(f"token_type_ids must be in [0, {NT}), got {t}")
                rtt[r] = t
                r += 1
        cdef float *x = _fp(buf.f2)
        cdef float *y = _fp(buf.outs[1] if self.project is None else buf.attn)
        cdef float *row
        cdef const float *ttab = _fp(self.token_type) if self.token_type is not None else NULL
        cdef const float *trow
        cdef const void *pw = _ptr(self.word)
        cdef const float *pp = _fp(self.position)
        cdef const float *pg = _fp(self.gamma)
        cdef const float *pb = _fp(self.beta)
        cdef int f16c = _HAS_F16C and isa >= 1     # as workbench_ext.ops.embed_rows
        with nogil:
            wb_embed_rows(pw, self.half, rid, r, E, pp, rpos, x, f16c, nt)
            if ttab != NULL:     # NumPy's x += table[tt]: one fp32 add per value
                for v in range(r):
                    row, trow = x + <size_t>v * E, ttab + <size_t>rtt[v] * E
                    for h in range(E):
                        row[h] = row[h] + trow[h]
            wb_layernorm(x, NULL, NULL, pg, pb, self.eps, r, E, y, isa, nt)
        if self.project is not None:
            _linear(buf, self.project, r, buf.attn, buf.outs[1], 0, isa)
        return buf.outs[1]

    cdef object head(self, _Buffers buf, str name, object cls_rows, int B, int code=-1):
        """Logits [B, labels] (a new array) of head `name` on the [CLS] rows [B, H]: pre, its
        activation, cls; its Linears on ISA `code` (the forward's; -1: they resolve it)."""
        cdef _Head hd = self.heads[name]
        _linear(buf, hd.pre, B, cls_rows, buf.attn, 0, code)
        cdef float *p = _fp(buf.attn)
        cdef size_t i, n = <size_t>B * hd.pre[0][1].N
        cdef int isa = 0, nt = 1
        if hd.act == 2:  # GELU on the ISA and threads workbench_ext.ops.gelu uses
            isa, nt = _cpu.ISA_CODES[_cpu.active_isa()], wb_threads(0)
        with nogil:
            if hd.act == 1:
                wb_tanh(p, p, n)
            elif hd.act == 2:
                wb_gelu(p, p, n, isa, nt)
            else:
                for i in range(n):
                    if p[i] < 0:   # np.maximum(x, 0)'s bits: -0.0 and NaN stay
                        p[i] = 0
        logits = np.empty((B, hd.labels), np.float32)
        _linear(buf, hd.cls, B, buf.attn, logits, 0, code)
        return logits
