/* FMA throughput of one core: 12 independent chains of 512-bit and of 256-bit FMAs (gcc -O2 fma_peak.c -o fma_peak && ./fma_peak); on this machine 197 GFLOP/s a core at 512 bits, 108 at 256. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
__attribute__((target("avx512f"))) float f512(long n){
#define D(i) __m512 a##i=_mm512_set1_ps(i*0.001f);
  R12(D)
  __m512 b=_mm512_set1_ps(0.9999f), c=_mm512_set1_ps(0.0001f);
  for(long k=0;k<n;k++){
#define F(i) a##i=_mm512_fmadd_ps(a##i,b,c);
   R12(F)
  }
#define S(i) s+=_mm512_reduce_add_ps(a##i);
  float s=0; R12(S) return s;}
__attribute__((target("avx2,fma"))) float f256(long n){
#undef D
#undef F
#define D(i) __m256 a##i=_mm256_set1_ps(i*0.001f);
  R12(D)
  __m256 b=_mm256_set1_ps(0.9999f), c=_mm256_set1_ps(0.0001f);
  for(long k=0;k<n;k++){
#define F(i) a##i=_mm256_fmadd_ps(a##i,b,c);
   R12(F)
  }
  float s=0; float t[8];
#undef S
#define S(i) _mm256_storeu_ps(t,a##i); for(int j=0;j<8;j++) s+=t[j];
  R12(S) return s;}
int main(){
  long n=50000000;
  for(int rep=0;rep<3;rep++){
  unsigned long long c0=__rdtsc(); double t0=now(); float s=f512(n); double t1=now(); unsigned long long c1=__rdtsc();
  float s2=f256(n); double t2=now(); unsigned long long c2=__rdtsc();
  printf("512: %.2f FMA/ns (%.1f GFLOP/s/core) tsc-cyc/FMA %.3f | 256: %.2f FMA/ns (%.1f GFLOP/s) tsc-cyc/FMA %.3f  [%g %g]\n",
    12.0*n/(t1-t0)/1e9, 12.0*n*32/(t1-t0)/1e9, (double)(c1-c0)/(12.0*n), 12.0*n/(t2-t1)/1e9, 12.0*n*16/(t2-t1)/1e9, (double)(c2-c1)/(12.0*n), s, s2);}
}
