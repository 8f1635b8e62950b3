/* The runtime's input check in one pass over a batch (workbench.runtime.inputs): shared by
 * ops.scan_batch (the check on its own) and Int8Encoder.classify_tokens (the check and the
 * forward in one call). */
#ifndef WB_INPUTS_H
#define WB_INPUTS_H
#include <stdint.h>

/* ids, mask, tt: int64 [B, S] row-major; mask NULL: every position a token (all 1s); tt NULL:
 * no token types. Returns 1 when every id is in [0, vocab), every mask value 0 or 1 and every
 * token type in [0, types); 0 otherwise (the caller's NumPy checks then say which value).
 * counts[b]: row b's 1s. *prefix: every row is its 1s then 0s. *last: 1 + the last column
 * holding a 1 in any row (0: none). */
static int wb_scan_batch(const int64_t *ids, const int64_t *mask, const int64_t *tt, long B, long S,
                         long vocab, long types, int64_t *counts, int *prefix, long *last) {
    int ok = 1, pre = 1;
    long end_max = 0;
    for (long b = 0; b < B; b++) {
        const int64_t *row = ids + b * S;
        long c = 0, end = 0;
        for (long j = 0; j < S; j++)
            ok &= row[j] >= 0 && row[j] < vocab;
        if (tt)
            for (long j = 0; j < S; j++)
                ok &= tt[b * S + j] >= 0 && tt[b * S + j] < types;
        if (mask) {
            const int64_t *Mk = mask + b * S;
            for (long j = 0; j < S; j++) {
                if (Mk[j] == 1) {
                    c++;
                    end = j + 1;
                } else if (Mk[j] != 0) {
                    ok = 0;
                }
            }
        } else {
            c = end = S;
        }
        counts[b] = c;
        pre &= end == c;  /* its c 1s end at column c: they are columns 0..c-1 */
        if (end > end_max) end_max = end;
    }
    *prefix = pre;
    *last = end_max;
    return ok;
}
#endif
