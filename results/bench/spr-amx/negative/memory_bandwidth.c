/* Read bandwidth of this machine's caches and memory: sums a buffer of N MB with 512-bit loads on T
 * OpenMP threads (each its own half), best of 20 passes. gcc -O2 -mavx512f -fopenmp
 * memory_bandwidth.c -o bw && ./bw 96 2. Results in ../README.md, fourth session. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t n=(size_t)atol(argv[1])<<20; int nt=atoi(argv[2]);
  char*b=aligned_alloc(64,n); memset(b,1,n);
  double best=1e9;
  for(int r=0;r<20;r++){
    double t=now(); long long tot=0;
    #pragma omp parallel num_threads(nt) reduction(+:tot)
    { int id=omp_get_thread_num(); size_t ch=n/nt; const char*p=b+id*ch; __m512i acc=_mm512_setzero_si512();
      for(size_t i=0;i<ch;i+=256){ acc=_mm512_add_epi64(acc,_mm512_load_si512(p+i)); acc=_mm512_add_epi64(acc,_mm512_load_si512(p+i+64));acc=_mm512_add_epi64(acc,_mm512_load_si512(p+i+128));acc=_mm512_add_epi64(acc,_mm512_load_si512(p+i+192));}
      tot+=_mm512_reduce_add_epi64(acc);}
    t=now()-t; if(t<best)best=t; if(tot==42)puts("");
  }
  printf("%zu MB %d thr: %.1f GB/s\n",n>>20,nt,n/best/1e9);
}
