/* Round trip of one cache line between logical CPUs 0 and 1 (two pinned threads bouncing an atomic
 * counter): ~55 ns when the two vCPUs share a CCD of the host, several times that across dies.
 * Built and loaded by phases.py (gcc -O2 -shared -fPIC). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
static _Atomic long flag __attribute__((aligned(64)));
static long iters;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static void *other(void *a){(void)a;pin(1);for(long i=0;i<iters;i++){while(atomic_load(&flag)!=2*i+1);atomic_store(&flag,2*i+2);}return 0;}
double pingpong(long n){
  iters=n; atomic_store(&flag,0); pthread_t t; cpu_set_t old; pthread_getaffinity_np(pthread_self(),sizeof old,&old);
  pthread_create(&t,0,other,0); pin(0);
  struct timespec a,b; clock_gettime(CLOCK_MONOTONIC,&a);
  for(long i=0;i<n;i++){atomic_store(&flag,2*i+1);while(atomic_load(&flag)!=2*i+2);}
  clock_gettime(CLOCK_MONOTONIC,&b); pthread_join(t,0);
  pthread_setaffinity_np(pthread_self(),sizeof old,&old);
  return ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/n;
}
