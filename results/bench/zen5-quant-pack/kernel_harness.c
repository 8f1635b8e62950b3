/* What limits the 1x4 block-sparse VNNI kernel on this core: its inner loop (wb_vnni_sp_pair, G = 4
 * groups of 16 rows, two columns at a time) against variants, on random 90 %-sparse weights, one
 * thread, N columns in tiles of 32 over 2 tiles of 64 rows (v6: one tile of 128). The sums of
 * v1, v2 and v5 in the last tile each computes are checked against v0's (prints MISMATCH).
 *   v0  the kernel's loop as it is (x address = col * 256, separate x loads)
 *   v1  byte offsets precomputed (col * 256 stored), walked by pointer
 *   v2  four columns at a time (16 accumulators), leftovers per column
 *   v3  v1 with every x load inside 2 KB (always an L1 hit; wrong sums, timing only)
 *   v4  no x loads at all: x kept in registers (wrong sums, timing only)
 *   v5  v0 with two accumulator sets per column (16 chains), summed at the end
 *   v6  G = 8: 128-row tiles, 8 accumulators per column
 * Build and run:  gcc -O2 -o /tmp/kernel_harness kernel_harness.c && /tmp/kernel_harness 768 2304 0.9
 * Prints the best of 30 passes per variant, three rounds, in us and vpdpbusd per ns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>
#include <stdint.h>
#define T __attribute__((target("avx512f,avx512bw,avx512vnni,avx512vl")))
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define G 4
/* current: pair of columns */
T static inline __attribute__((always_inline)) void pair(const uint8_t *Xt, const int32_t *col, const int8_t *vals, int b, int b1, int d, int d1, int32_t *C0, int32_t *C1){
  __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0,e0=a0,e1=a0,e2=a0,e3=a0;
#define SPV(bb,A0,A1,A2,A3) { int32_t wv; memcpy(&wv, vals+4*(size_t)(bb),4); const __m512i w=_mm512_set1_epi32(wv); const uint8_t *x=Xt+(size_t)col[bb]*256; \
  A0=_mm512_dpbusd_epi32(A0,_mm512_loadu_si512(x),w); A1=_mm512_dpbusd_epi32(A1,_mm512_loadu_si512(x+64),w); A2=_mm512_dpbusd_epi32(A2,_mm512_loadu_si512(x+128),w); A3=_mm512_dpbusd_epi32(A3,_mm512_loadu_si512(x+192),w);}
  int n = b1-b < d1-d ? b1-b : d1-d;
  for(int i=0;i<n;i++){SPV(b+i,a0,a1,a2,a3) SPV(d+i,e0,e1,e2,e3)}
  for(b+=n;b<b1;b++) SPV(b,a0,a1,a2,a3)
  for(d+=n;d<d1;d++) SPV(d,e0,e1,e2,e3)
  _mm512_storeu_si512(C0,a0);_mm512_storeu_si512(C0+16,a1);_mm512_storeu_si512(C0+32,a2);_mm512_storeu_si512(C0+48,a3);
  _mm512_storeu_si512(C1,e0);_mm512_storeu_si512(C1+16,e1);_mm512_storeu_si512(C1+32,e2);_mm512_storeu_si512(C1+48,e3);
}
T __attribute__((noinline)) void tile_pair(const uint8_t *Xt,int n0,int nr,const int32_t*rp,const int32_t*col,const int8_t*vals,int32_t*Ct){
  for(int j=0;j+2<=nr;j+=2) pair(Xt,col,vals,rp[n0+j],rp[n0+j+1],rp[n0+j+1],rp[n0+j+2],Ct+j*64,Ct+(j+1)*64);
}
/* variant: pre-scaled offsets (col*256 stored), pointer walking */
T static inline __attribute__((always_inline)) void pair2(const uint8_t *Xt, const int32_t *off, const int32_t *vals32, int b, int b1, int d, int d1, int32_t *C0, int32_t *C1){
  __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0,e0=a0,e1=a0,e2=a0,e3=a0;
#define SPV2(po,pw,A0,A1,A2,A3) { const __m512i w=_mm512_set1_epi32(*(pw)); const uint8_t *x=Xt+(uint32_t)*(po); \
  A0=_mm512_dpbusd_epi32(A0,_mm512_loadu_si512(x),w); A1=_mm512_dpbusd_epi32(A1,_mm512_loadu_si512(x+64),w); A2=_mm512_dpbusd_epi32(A2,_mm512_loadu_si512(x+128),w); A3=_mm512_dpbusd_epi32(A3,_mm512_loadu_si512(x+192),w);}
  int n = b1-b < d1-d ? b1-b : d1-d;
  const int32_t *ob=off+b,*od=off+d,*wb=vals32+b,*wd=vals32+d;
  for(int i=0;i<n;i++){SPV2(ob+i,wb+i,a0,a1,a2,a3) SPV2(od+i,wd+i,e0,e1,e2,e3)}
  for(int i=n;i<b1-b;i++) SPV2(ob+i,wb+i,a0,a1,a2,a3)
  for(int i=n;i<d1-d;i++) SPV2(od+i,wd+i,e0,e1,e2,e3)
  _mm512_storeu_si512(C0,a0);_mm512_storeu_si512(C0+16,a1);_mm512_storeu_si512(C0+32,a2);_mm512_storeu_si512(C0+48,a3);
  _mm512_storeu_si512(C1,e0);_mm512_storeu_si512(C1+16,e1);_mm512_storeu_si512(C1+32,e2);_mm512_storeu_si512(C1+48,e3);
}
T __attribute__((noinline)) void tile_pair2(const uint8_t *Xt,int n0,int nr,const int32_t*rp,const int32_t*off,const int32_t*vals32,int32_t*Ct){
  for(int j=0;j+2<=nr;j+=2) pair2(Xt,off,vals32,rp[n0+j],rp[n0+j+1],rp[n0+j+1],rp[n0+j+2],Ct+j*64,Ct+(j+1)*64);
}
/* variant: 4 columns */
T static inline __attribute__((always_inline)) void quad(const uint8_t *Xt, const int32_t *off, const int32_t *vals32, const int32_t *r, int32_t *C){
  __m512i A[4][4];
  for(int c=0;c<4;c++) for(int g=0;g<4;g++) A[c][g]=_mm512_setzero_si512();
  int n=r[1]-r[0]; for(int c=1;c<4;c++){int m=r[c+1]-r[c]; if(m<n)n=m;}
  const int32_t *o0=off+r[0],*o1=off+r[1],*o2=off+r[2],*o3=off+r[3];
  const int32_t *w0=vals32+r[0],*w1=vals32+r[1],*w2=vals32+r[2],*w3=vals32+r[3];
  for(int i=0;i<n;i++){SPV2(o0+i,w0+i,A[0][0],A[0][1],A[0][2],A[0][3]) SPV2(o1+i,w1+i,A[1][0],A[1][1],A[1][2],A[1][3]) SPV2(o2+i,w2+i,A[2][0],A[2][1],A[2][2],A[2][3]) SPV2(o3+i,w3+i,A[3][0],A[3][1],A[3][2],A[3][3])}
  for(int i=n;i<r[1]-r[0];i++) SPV2(o0+i,w0+i,A[0][0],A[0][1],A[0][2],A[0][3])
  for(int i=n;i<r[2]-r[1];i++) SPV2(o1+i,w1+i,A[1][0],A[1][1],A[1][2],A[1][3])
  for(int i=n;i<r[3]-r[2];i++) SPV2(o2+i,w2+i,A[2][0],A[2][1],A[2][2],A[2][3])
  for(int i=n;i<r[4]-r[3];i++) SPV2(o3+i,w3+i,A[3][0],A[3][1],A[3][2],A[3][3])
  for(int c=0;c<4;c++) for(int g=0;g<4;g++) _mm512_storeu_si512(C+c*64+g*16,A[c][g]);
}
T __attribute__((noinline)) void tile_quad(const uint8_t *Xt,int n0,int nr,const int32_t*rp,const int32_t*off,const int32_t*vals32,int32_t*Ct){
  for(int j=0;j+4<=nr;j+=4) quad(Xt,off,vals32,rp+n0+j,Ct+j*64);
}
T __attribute__((noinline)) void tile_regx(const uint8_t *Xt,int n0,int nr,const int32_t*rp,const int32_t*off,const int32_t*vals32,int32_t*Ct){
  const __m512i x0=_mm512_loadu_si512(Xt),x1=_mm512_loadu_si512(Xt+64),x2=_mm512_loadu_si512(Xt+128),x3=_mm512_loadu_si512(Xt+192);
  for(int j=0;j+2<=nr;j+=2){
    int b=rp[n0+j],b1=rp[n0+j+1],d=b1,d1=rp[n0+j+2];
    __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0,e0=a0,e1=a0,e2=a0,e3=a0;
    int n=b1-b<d1-d?b1-b:d1-d;
    for(int i=0;i<n;i++){ __m512i w=_mm512_set1_epi32(vals32[b+i]); a0=_mm512_dpbusd_epi32(a0,x0,w);a1=_mm512_dpbusd_epi32(a1,x1,w);a2=_mm512_dpbusd_epi32(a2,x2,w);a3=_mm512_dpbusd_epi32(a3,x3,w);
      __m512i u=_mm512_set1_epi32(vals32[d+i]); e0=_mm512_dpbusd_epi32(e0,x0,u);e1=_mm512_dpbusd_epi32(e1,x1,u);e2=_mm512_dpbusd_epi32(e2,x2,u);e3=_mm512_dpbusd_epi32(e3,x3,u);}
    _mm512_storeu_si512(Ct+j*64,_mm512_add_epi32(_mm512_add_epi32(a0,a1),_mm512_add_epi32(a2,a3)));
    _mm512_storeu_si512(Ct+(j+1)*64,_mm512_add_epi32(_mm512_add_epi32(e0,e1),_mm512_add_epi32(e2,e3)));
  }
}
T static inline __attribute__((always_inline)) void pair16(const uint8_t *Xt, const int32_t *col, const int8_t *vals, int b, int b1, int d, int d1, int32_t *C0, int32_t *C1){
  __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0,e0=a0,e1=a0,e2=a0,e3=a0;
  __m512i p0=a0,p1=a0,p2=a0,p3=a0,q0=a0,q1=a0,q2=a0,q3=a0;
  int n = b1-b < d1-d ? b1-b : d1-d;
  int i=0;
  for(;i+2<=n;i+=2){SPV(b+i,a0,a1,a2,a3) SPV(d+i,e0,e1,e2,e3) SPV(b+i+1,p0,p1,p2,p3) SPV(d+i+1,q0,q1,q2,q3)}
  for(;i<n;i++){SPV(b+i,a0,a1,a2,a3) SPV(d+i,e0,e1,e2,e3)}
  b+=n; d+=n;
  for(;b+2<=b1;b+=2){SPV(b,a0,a1,a2,a3) SPV(b+1,p0,p1,p2,p3)}
  for(;b<b1;b++) SPV(b,a0,a1,a2,a3)
  for(;d+2<=d1;d+=2){SPV(d,e0,e1,e2,e3) SPV(d+1,q0,q1,q2,q3)}
  for(;d<d1;d++) SPV(d,e0,e1,e2,e3)
  _mm512_storeu_si512(C0,_mm512_add_epi32(a0,p0));_mm512_storeu_si512(C0+16,_mm512_add_epi32(a1,p1));_mm512_storeu_si512(C0+32,_mm512_add_epi32(a2,p2));_mm512_storeu_si512(C0+48,_mm512_add_epi32(a3,p3));
  _mm512_storeu_si512(C1,_mm512_add_epi32(e0,q0));_mm512_storeu_si512(C1+16,_mm512_add_epi32(e1,q1));_mm512_storeu_si512(C1+32,_mm512_add_epi32(e2,q2));_mm512_storeu_si512(C1+48,_mm512_add_epi32(e3,q3));
}
T __attribute__((noinline)) void tile_pair16(const uint8_t *Xt,int n0,int nr,const int32_t*rp,const int32_t*col,const int8_t*vals,int32_t*Ct){
  for(int j=0;j+2<=nr;j+=2) pair16(Xt,col,vals,rp[n0+j],rp[n0+j+1],rp[n0+j+1],rp[n0+j+2],Ct+j*64,Ct+(j+1)*64);
}
/* v6: G = 8 (one 128-row tile): x tile 512 bytes per kb */
T static inline __attribute__((always_inline)) void pair8(const uint8_t *Xt, const int32_t *col, const int8_t *vals, int b, int b1, int d, int d1, int32_t *C0, int32_t *C1){
  __m512i a[8], e[8];
  for(int g=0;g<8;g++){a[g]=_mm512_setzero_si512(); e[g]=a[g];}
#define SPV8(bb,A) { int32_t wv; memcpy(&wv, vals+4*(size_t)(bb),4); const __m512i w=_mm512_set1_epi32(wv); const uint8_t *x=Xt+(size_t)col[bb]*512; \
  for(int g=0;g<8;g++) A[g]=_mm512_dpbusd_epi32(A[g],_mm512_loadu_si512(x+64*g),w);}
  int n = b1-b < d1-d ? b1-b : d1-d;
  for(int i=0;i<n;i++){SPV8(b+i,a) SPV8(d+i,e)}
  for(b+=n;b<b1;b++) SPV8(b,a)
  for(d+=n;d<d1;d++) SPV8(d,e)
  for(int g=0;g<8;g++){_mm512_storeu_si512(C0+16*g,a[g]); _mm512_storeu_si512(C1+16*g,e[g]);}
}
T __attribute__((noinline)) void tile_pair8(const uint8_t *Xt,int n0,int nr,const int32_t*rp,const int32_t*col,const int8_t*vals,int32_t*Ct){
  for(int j=0;j+2<=nr;j+=2) pair8(Xt,col,vals,rp[n0+j],rp[n0+j+1],rp[n0+j+1],rp[n0+j+2],Ct+j*128,Ct+(j+1)*128);
}
int main(int argc,char**argv){
  int K=atoi(argv[1]), N=atoi(argv[2]); double sp=atof(argv[3]); int Kb=K/4;
  srand(1);
  int32_t *rp=malloc((N+1)*4); int32_t *col=malloc((size_t)N*Kb*4); int8_t *vals=aligned_alloc(64,(size_t)N*Kb*4+64); int32_t *off=malloc((size_t)N*Kb*4); int32_t *offs=malloc((size_t)N*Kb*4);
  int nnz=0; rp[0]=0;
  for(int n=0;n<N;n++){for(int kb=0;kb<Kb;kb++) if(rand()/(double)RAND_MAX>=sp){col[nnz]=kb; off[nnz]=kb*256; offs[nnz]=(kb%8)*256; for(int q=0;q<4;q++) vals[4*nnz+q]=(int8_t)(rand()%255-127); nnz++;} rp[n+1]=nnz;}
  uint8_t *Xt=aligned_alloc(64,(size_t)Kb*256*2); for(size_t i=0;i<(size_t)Kb*256*2;i++) Xt[i]=rand()&255;
  int32_t *Ct=aligned_alloc(64,32*128*4), *Ct2=aligned_alloc(64,32*128*4);
  long dp = (long)nnz*4*2; /* 2 row tiles of 64 */
  for(int rep=0;rep<3;rep++){
   for(int v=0;v<7;v++){
    double best=1e9;
    for(int it=0;it<30;it++){
      double t0=now();
      if(v==6){ for(int n0=0;n0<N;n0+=32) tile_pair8(Xt,n0,32,rp,col,vals,Ct2);} else for(int mb=0;mb<2;mb++) for(int n0=0;n0<N;n0+=32){
        const uint8_t *X=Xt+(size_t)mb*Kb*256;
        if(v==0) tile_pair(X,n0,32,rp,col,vals,Ct); else if(v==1) tile_pair2(X,n0,32,rp,off,(const int32_t*)vals,Ct2); else if(v==2) tile_quad(X,n0,32,rp,off,(const int32_t*)vals,Ct2); else if(v==3) tile_pair2(X,n0,32,rp,offs,(const int32_t*)vals,Ct2); else if(v==4) tile_regx(X,n0,32,rp,off,(const int32_t*)vals,Ct2); else tile_pair16(X,n0,32,rp,col,vals,Ct2);
      }
      double t=now()-t0; if(t<best)best=t;
    }
    if((v==1||v==2||v==5) && memcmp(Ct,Ct2,32*64*4)) printf("MISMATCH v%d\n",v);
    printf("v%d %.1f us  %.2f dpbusd/ns\n",v,best*1e6,dp/(best*1e9));
   }
  }
}
