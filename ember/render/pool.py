"""C source of the host library's thread pool: the runtime of a kernel's parts.

A parallel kernel is a function of its part (`const int64_t part` of `parts`), each part a
slice of every shared loop (ember_part_lo / ember_part_hi). ember_parallel(task, args, parts,
team) runs task(args, part) for every part, the calling thread taking parts too:

- claim mode (team == 0, a kernel without barriers): the caller and the pool's workers claim
  parts one at a time from a shared counter, and the caller waits only for parts a worker
  has claimed. A worker that is late (its core busy elsewhere, or a virtual CPU the host has
  descheduled) leaves its part to the caller, where an OpenMP team would wait for it at the
  region's end: on this project's 2-vCPU machine such periods made 2-thread runs slower
  than 1-thread runs (ResNet-8 0.75 ms against 0.51), while onnxruntime's pool, which works
  this way, kept its 2-thread lead.
- team mode (team != 0, a kernel whose phases meet at ember_barrier): every part runs on its
  own thread at once, as an OpenMP team does.

A job is published as one 64-bit word, epoch << 32 | next part, so a claim (a compare-and-swap
of that word) can never take a part of a later job with the description of an earlier one;
the descriptions alternate between two slots by epoch. Idle workers spin for a while, then
sleep on a condition variable. A second caller thread arriving while the pool is busy runs its
kernel's parts itself (claim mode) or waits for the pool (team mode): threads never multiply
past the pool's. Workers start on first use (again in a forked child) and stop when the
library is unloaded.
"""
from __future__ import annotations

#: how long an idle worker spins for the next job before it sleeps: longer than the gap
#: between two kernels of a run, short enough not to hold a core after a run ends
SPIN_NS = 200_000

POOL_C = r"""
#include <pthread.h>
#include <time.h>

typedef void (*ember_task)(void *const *args, int64_t part);

#define EMBER_MAX_WORKERS 63
static struct {
    uint64_t word;                     /* epoch << 32 | next unclaimed part */
    struct { ember_task fn; void *const *args; int64_t parts; int team; } job[2];
    int64_t done[2];                   /* parts finished, per job slot */
    int busy;                          /* a caller is running a job */
    int started, workers, stop, sleepers;
    uint32_t start_epoch;              /* the last job before the workers started */
    int64_t barrier_count, barrier_sense;
    pthread_t threads[EMBER_MAX_WORKERS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ember_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static inline void ember_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t ember_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Claim the next part of job `epoch` (< parts): 1 and *part, or 0 once none is left or a
 * later job has replaced it. */
static int ember_claim(uint32_t epoch, int64_t parts, int64_t *part) {
    uint64_t w = __atomic_load_n(&ember_pool.word, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((uint32_t)(w >> 32) != epoch || (int64_t)(uint32_t)w >= parts) return 0;
        if (__atomic_compare_exchange_n(&ember_pool.word, &w, w + 1, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            *part = (int64_t)(uint32_t)w;
            return 1;
        }
    }
}

static void ember_run_parts(uint32_t epoch, int once) {
    const int s = epoch & 1;
    const ember_task fn = __atomic_load_n(&ember_pool.job[s].fn, __ATOMIC_RELAXED);
    void *const *args = __atomic_load_n(&ember_pool.job[s].args, __ATOMIC_RELAXED);
    const int64_t parts = __atomic_load_n(&ember_pool.job[s].parts, __ATOMIC_RELAXED);
    int64_t part;
    /* the slot is stable while the word still carries `epoch`, which the claim checks */
    while (ember_claim(epoch, parts, &part)) {
        fn(args, part);
        __atomic_fetch_add(&ember_pool.done[s], 1, __ATOMIC_RELEASE);
        if (once) return;
    }
}

static void *ember_worker(void *unused) {
    (void)unused;
    uint32_t seen = ember_pool.start_epoch;      /* set before the thread was created */
    for (;;) {
        uint32_t epoch = (uint32_t)(__atomic_load_n(&ember_pool.word, __ATOMIC_ACQUIRE) >> 32);
        if (epoch == seen) {
            const int64_t until = ember_now_ns() + EMBER_SPIN_NS;
            for (int i = 1; epoch == seen; ++i) {
                ember_pause();
                epoch = (uint32_t)(__atomic_load_n(&ember_pool.word, __ATOMIC_ACQUIRE) >> 32);
                if (epoch == seen && i % 256 == 0 && ember_now_ns() > until) break;
            }
        }
        if (epoch == seen) {
            pthread_mutex_lock(&ember_pool.mu);
            __atomic_fetch_add(&ember_pool.sleepers, 1, __ATOMIC_SEQ_CST);
            while ((uint32_t)(__atomic_load_n(&ember_pool.word, __ATOMIC_SEQ_CST) >> 32) == seen
                   && !__atomic_load_n(&ember_pool.stop, __ATOMIC_SEQ_CST))
                pthread_cond_wait(&ember_pool.cv, &ember_pool.mu);
            __atomic_fetch_sub(&ember_pool.sleepers, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&ember_pool.mu);
            if (__atomic_load_n(&ember_pool.stop, __ATOMIC_SEQ_CST)) return 0;
            continue;
        }
        seen = epoch;
        const int team = __atomic_load_n(&ember_pool.job[epoch & 1].team, __ATOMIC_RELAXED);
        ember_run_parts(epoch, team);
    }
}

static void ember_pool_stop(void) {
    if (!ember_pool.started) return;
    pthread_mutex_lock(&ember_pool.mu);
    __atomic_store_n(&ember_pool.stop, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&ember_pool.cv);
    pthread_mutex_unlock(&ember_pool.mu);
    for (int i = 0; i < ember_pool.workers; ++i) pthread_join(ember_pool.threads[i], 0);
    ember_pool.started = ember_pool.workers = ember_pool.stop = 0;
}

/* the workers run this library's code: they must end before it is unmapped */
__attribute__((destructor)) static void ember_pool_unload(void) { ember_pool_stop(); }

/* a forked child has the parent's memory but only the forking thread */
static void ember_pool_forked(void) {
    ember_pool.started = ember_pool.workers = ember_pool.busy = ember_pool.sleepers = 0;
    pthread_mutex_init(&ember_pool.mu, 0);
    pthread_cond_init(&ember_pool.cv, 0);
}

static void ember_pool_start(int workers) {
    static int at_fork;
    if (!at_fork) at_fork = pthread_atfork(0, 0, ember_pool_forked) == 0;
    if (workers > EMBER_MAX_WORKERS) workers = EMBER_MAX_WORKERS;
    ember_pool.start_epoch = (uint32_t)(__atomic_load_n(&ember_pool.word, __ATOMIC_RELAXED) >> 32);
    for (int i = 0; i < workers; ++i) {
        if (pthread_create(&ember_pool.threads[i], 0, ember_worker, 0) != 0) break;
        ember_pool.workers = i + 1;
    }
    ember_pool.started = 1;
}

static void ember_parallel(ember_task fn, void *const *args, int64_t parts, int team) {
    int idle = 0;
    if (!__atomic_compare_exchange_n(&ember_pool.busy, &idle, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED)) {
        if (!team) {                  /* another caller thread holds the pool */
            for (int64_t p = 0; p < parts; ++p) fn(args, p);
            return;
        }
        do { idle = 0; ember_pause(); }
        while (!__atomic_compare_exchange_n(&ember_pool.busy, &idle, 1, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED));
    }
    if (!ember_pool.started) ember_pool_start(EMBER_POOL_WORKERS);
    if (ember_pool.workers + 1 < parts && team) {       /* no team to be had: one thread */
        fn(args, -1);
        __atomic_store_n(&ember_pool.busy, 0, __ATOMIC_RELEASE);
        return;
    }
    const uint32_t epoch = (uint32_t)(__atomic_load_n(&ember_pool.word, __ATOMIC_RELAXED) >> 32) + 1;
    const int s = epoch & 1;
    __atomic_store_n(&ember_pool.job[s].fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&ember_pool.job[s].args, args, __ATOMIC_RELAXED);
    __atomic_store_n(&ember_pool.job[s].parts, parts, __ATOMIC_RELAXED);
    __atomic_store_n(&ember_pool.job[s].team, team, __ATOMIC_RELAXED);
    __atomic_store_n(&ember_pool.done[s], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ember_pool.word, (uint64_t)epoch << 32, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ember_pool.sleepers, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&ember_pool.mu);
        pthread_cond_broadcast(&ember_pool.cv);
        pthread_mutex_unlock(&ember_pool.mu);
    }
    ember_run_parts(epoch, team);
    while (__atomic_load_n(&ember_pool.done[s], __ATOMIC_ACQUIRE) < parts) ember_pause();
    __atomic_store_n(&ember_pool.busy, 0, __ATOMIC_RELEASE);
}

/* Wait until every part of the running team-mode job has arrived (a sense-reversing
 * barrier); part -1 (the whole kernel on one thread) passes straight through. */
static void ember_barrier(int64_t part, int64_t parts) {
    if (part < 0) return;
    const int64_t sense = __atomic_load_n(&ember_pool.barrier_sense, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&ember_pool.barrier_count, 1, __ATOMIC_ACQ_REL) == parts) {
        __atomic_store_n(&ember_pool.barrier_count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&ember_pool.barrier_sense, sense + 1, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&ember_pool.barrier_sense, __ATOMIC_ACQUIRE) == sense) ember_pause();
}

/* part p's share [lo, hi) of a loop of n trips; part -1 (one thread) all of it */
static inline int64_t ember_part_lo(int64_t part, int64_t parts, int64_t n) {
    return part < 0 ? 0 : part * n / parts;
}
static inline int64_t ember_part_hi(int64_t part, int64_t parts, int64_t n) {
    return part < 0 ? n : (part + 1) * n / parts;
}
"""


def pool_c(workers: int) -> str:
    """The pool's C source for a library whose kernels use at most `workers` + 1 threads."""
    return (f"#define EMBER_POOL_WORKERS {workers}\n#define EMBER_SPIN_NS {SPIN_NS}\n"
            + POOL_C)
