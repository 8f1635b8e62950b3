# The compiled encoder's argument checks (included by encoder.pyx): each wrong argument is a
# ValueError naming it, before any work.


cdef object _length_offsets(object lengths, int longest):
    """The int32 [B + 1] offsets of packed sequences of `lengths` tokens (1-D ints, each >= 1 and,
    when longest > 0, <= longest)."""
    lens = np.asarray(lengths)
    if lens.ndim != 1 or lens.size < 1 or lens.dtype.kind not in "iu":
        raise ValueError(f"lengths must be a 1-D array of token counts, got {lens.dtype} {lens.shape}")
    if lens.min() < 1 or (longest > 0 and lens.max() > longest):
        raise ValueError(f"every sequence needs at least one token{f' and at most {longest}' if longest > 0 else ''}, "
                         f"got lengths {lens.tolist()}")
    offs = np.zeros(lens.size + 1, np.int32)
    np.cumsum(lens, out=offs[1:])
    return offs


cdef object _packed_offsets(object h, object lengths, int H):
    """`_length_offsets`, checking that h holds their total of rows: float32 [T, H], C-contiguous."""
    offs = _length_offsets(lengths, 0)
    T = int(offs[offs.size - 1])
    if not (isinstance(h, np.ndarray) and h.dtype == np.float32 and h.flags.c_contiguous and h.shape == (T, H)):
        raise ValueError(f"h must be C-contiguous float32 [{T}, {H}] (the lengths' total), got "
                         f"{getattr(h, 'dtype', type(h).__name__)} {getattr(h, 'shape', '')}")
    return offs


cdef tuple _drop_plan(object keep, object chosen, int first, int stop, object seq_lens):
    """(keep as int32 [stop - first - 1, B] or None, each sequence's rows at layer stop - 1),
    checking that `chosen` has room for every kept position (run_layers)."""
    cdef int B = seq_lens.size
    counts, room = seq_lens, 0
    if keep is None:
        return None, counts
    drops = np.ascontiguousarray(keep, dtype=np.int32)
    if drops.shape != (stop - first - 1, B) or (drops.size and drops.min() < 1):
        raise ValueError(f"keep must be [{stop - first - 1}, {B}] token counts >= 1 (one row per drop "
                         f"between layers {first}..{stop - 1}), got {np.shape(keep)}")
    for row in drops:
        counts = np.minimum(row, counts)
        room += int(counts.sum())
    if not (isinstance(chosen, np.ndarray) and chosen.dtype == np.int32 and chosen.flags.c_contiguous
            and chosen.size >= room):
        raise ValueError(f"chosen must be C-contiguous int32 with room for {room} kept positions, got "
                         f"{getattr(chosen, 'dtype', type(chosen).__name__)} {getattr(chosen, 'shape', '')}")
    return drops, counts


cdef _check_sig(object sig, Py_ssize_t n, bint cls_only):
    if cls_only:
        raise ValueError("sig needs every query row of the layer; it cannot go with cls_only")
    if not (isinstance(sig, np.ndarray) and sig.dtype == np.float32 and sig.flags.c_contiguous and sig.size == n):
        raise ValueError(f"sig must be C-contiguous float32 with {n} elements (heads x tokens), got "
                         f"{getattr(sig, 'dtype', type(sig).__name__)} {getattr(sig, 'shape', '')}")


cdef tuple _classify_rows(object ids, object tt, object lengths, object mask_bias):
    """classify's arguments -> (offsets or None, mask_bias, B, S, M): packed (lengths given), S
    the longest sequence, M its rows, and S zeros to mask; else B x S rows and mask_bias checked."""
    check_array(ids, "ids", np.int64, 2)
    if tt is not None:
        check_array(tt, "tt", np.int64, 2)
        if tt.shape != ids.shape:
            raise ValueError(f"tt must have the shape of ids {ids.shape}, got {tt.shape}")
    B, S = ids.shape
    if lengths is not None:
        offs = _length_offsets(lengths, S)
        if offs.size != B + 1:
            raise ValueError(f"lengths must have one count per row of ids ({B}), got {offs.size - 1}")
        S = int(np.diff(offs).max())
        return offs, np.zeros(S, np.float32), B, S, int(offs[B])
    if not (isinstance(mask_bias, np.ndarray) and mask_bias.dtype == np.float32 and mask_bias.flags.c_contiguous
            and mask_bias.size == B * S):
        raise ValueError(f"mask_bias must be C-contiguous float32 with {B * S} values ([B, S])")
    return None, mask_bias, B, S, B * S


cdef object _token_rows(object ids, object mask, object tt, long vocab, long types, bint pack):
    """classify_tokens' check and layout: (offsets or None, mask_bias, counts, B, S, M) as
    `_classify_rows` gives them, with counts int64 [B] each row's tokens; None when a value is
    wrong or the mask is neither all tokens nor (with `pack`) each row's tokens then padding."""
    ok, counts, prefix, _ = _scan_batch(ids, mask, tt, vocab, types)
    if not ok or ids.shape[0] < 1 or ids.shape[1] < 1:
        return None
    cdef long B = ids.shape[0], S = ids.shape[1], b, least, longest = 0
    cdef int64_t *c = <int64_t*>_ptr(counts)
    least = S
    for b in range(B):
        least = min(least, c[b])
        longest = max(longest, c[b])
    if least == S:  # no padding: the B x S rows, nothing masked
        return None, np.zeros(B * S, np.float32), counts, B, S, B * S
    if not (pack and prefix and least >= 1):
        return None
    offs = np.empty(B + 1, np.int32)  # packed: each row's tokens, one sequence after another
    cdef int32_t *o = <int32_t*>_ptr(offs)
    o[0] = 0
    for b in range(B):
        o[b + 1] = o[b] + <int32_t>c[b]
    return offs, np.zeros(longest, np.float32), counts, B, longest, int(o[B])


cdef inline bint _is_i64_matrix(object a):
    """An int64 [B, S] C-contiguous ndarray (not a subclass): what classify_tokens reads."""
    return (type(a) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_INT64
            and cnp.PyArray_NDIM(<cnp.ndarray>a) == 2 and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a))


cdef inline bint _same_i64_matrix(object a, cnp.npy_intp *shape):
    """_is_i64_matrix with the given [B, S]."""
    if not _is_i64_matrix(a):
        return False
    cdef cnp.npy_intp *s = cnp.PyArray_DIMS(<cnp.ndarray>a)
    return s[0] == shape[0] and s[1] == shape[1]
