/* A neighbour on the other vCPU: reads (or writes) a buffer of MB megabytes in 64-byte steps
 * forever. Usage: thrash MB [w] */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    size_t n = (size_t)atol(argv[1]) << 20;
    int wr = argc > 2 && argv[2][0] == 'w';
    volatile uint64_t *b = aligned_alloc(64, n);
    memset((void *)b, 1, n);
    uint64_t s = 0;
    for (;;)
        for (size_t i = 0; i < n / 8; i += 8) { if (wr) b[i] = s; else s += b[i]; }
}
