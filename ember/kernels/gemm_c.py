"""C source of the float32 GEMM support routines: the register-blocked microkernels and the
packing routines that feed them (Goto & van de Geijn's scheme).

Packed layouts (all float32, zero-padded):
  A, MR-row panels:  panel p holds rows [p*MR, p*MR + mr_p) as kc x mr_p values, k-major;
                     mr_p = MR except in a last, shorter panel. Panel p starts at p*kc*MR.
  B, NR-col panels:  panel q holds columns [q*NR, q*NR + NR) as kc x NR values, k-major,
                     columns past N zero. Panel q starts at q*kc*NR.

Vectors are GCC/Clang vector extensions, so one source builds for AVX2 (8 lanes), SSE and
NEON (4 lanes); the compiler fuses the multiply-adds with -ffp-contract=fast.
"""
from __future__ import annotations

from ember.lower.schedule import GemmTiles


def gemm_support_c(t: GemmTiles) -> str:
    """Typedefs, the microkernels for mr = 1..MR, and the packing routines for tiles `t`.
    Each routine is marked `unused`: a model calls only some, and C99 -Wall projects
    (`ember export`) would warn of the others (GCC drops them either way)."""
    # The wrappers are never inlined: each is compiled on its own with mr and offs constant,
    # which is what lets GCC unroll the row loop and keep the accumulators in registers (a
    # copy inlined into a large kernel body was left in memory, at half speed).
    # Three per row count: A and B packed; B read in place through row offsets (suffix o); A
    # read in place, row r at a + r*lda (suffix a).
    b1 = t.lanes          # where the second vector of a row of B starts
    ukrs = "\n".join(
        f"static __attribute__((noinline, unused)) void ember_sgemm_ukr{mr}_{t.nr}(int64_t kc, const float *restrict a, "
        f"const float *restrict b, float *restrict c, int64_t ldc, int accumulate) "
        f"{{ ember_sgemm_ukr_{t.nr}({mr}, kc, a, 0, b, 0, {b1}, c, ldc, accumulate); }}\n"
        f"static __attribute__((noinline, unused)) void ember_sgemm_ukr{mr}_{t.nr}o(int64_t kc, const float *restrict a, "
        f"const float *restrict b, const int64_t *restrict offs, float *restrict c, int64_t ldc, "
        f"int accumulate) {{ ember_sgemm_ukr_{t.nr}({mr}, kc, a, 0, b, offs, {b1}, c, ldc, accumulate); }}\n"
        f"static __attribute__((noinline, unused)) void ember_sgemm_ukr{mr}_{t.nr}a(int64_t kc, const float *restrict a, "
        f"int64_t lda, const float *restrict b, float *restrict c, int64_t ldc, int accumulate) "
        f"{{ ember_sgemm_ukr_{t.nr}({mr}, kc, a, lda, b, 0, {b1}, c, ldc, accumulate); }}"
        + ("" if t.scalar else          # suffix h: only the first vector's columns (lda < 0)
           f"\nstatic __attribute__((noinline, unused)) void ember_sgemm_ukr{mr}_{t.nr}h(int64_t kc, "
           f"const float *restrict a, const float *restrict b, float *restrict c, int64_t ldc, "
           f"int accumulate) {{ ember_sgemm_ukr_{t.nr}({mr}, kc, a, -1, b, 0, {t.lanes}, c, ldc, "
           f"accumulate); }}"
           # suffix p: B through row offsets, its second vector `b1` floats after the first
           f"\nstatic __attribute__((noinline, unused)) void ember_sgemm_ukr{mr}_{t.nr}p(int64_t kc, "
           f"const float *restrict a, const float *restrict b, const int64_t *restrict offs, "
           f"int64_t b1, float *restrict c, int64_t ldc, int accumulate) "
           f"{{ ember_sgemm_ukr_{t.nr}({mr}, kc, a, 0, b, offs, b1, c, ldc, accumulate); }}")
        for mr in range(1, t.mr + 1))
    ukr = _scalar_ukr_c(t) + _scalar_conv_panel_c(t) if t.scalar else _vector_ukr_c(t)
    return f"""{ukr}
{ukrs}

{_transpose_c(t)}
/* Pack A[0:mc][0:kc] (element (i, k) at src[i*rs + k*cs]) into MR-row panels. */
static __attribute__((unused)) void ember_pack_a_{t.mr}(int64_t mc, int64_t kc, const float *restrict src, int64_t rs,
                               int64_t cs, float *restrict dst) {{
    for (int64_t i0 = 0; i0 < mc; i0 += {t.mr}, dst += kc*{t.mr}) {{
        const int64_t mr = mc - i0 < {t.mr} ? mc - i0 : {t.mr};
        const float *restrict s = src + i0*rs;
        if (cs == 1)       /* rows contiguous: a transpose, 4 x 4 at a time */
            ember_transpose_{t.nr}(mr, kc, s, rs, dst, mr);
        else
            for (int64_t k = 0; k < kc; ++k)
                for (int64_t r = 0; r < mr; ++r) dst[k*mr + r] = s[r*rs + k*cs];
    }}
}}

/* Pack B[0:kc][0:nc] (element (k, j) at src[k*rs + j*cs]) into NR-column panels. */
static __attribute__((unused)) void ember_pack_b_{t.nr}(int64_t kc, int64_t nc, const float *restrict src, int64_t rs,
                               int64_t cs, float *restrict dst) {{
    if (cs == 1 && nc >= {t.nr}) {{  /* whole panels row by row: each row of B read once, in
                                   order (panel by panel read kc rows a line at a time) */
        const int64_t full = nc / {t.nr} * {t.nr};
        for (int64_t k = 0; k < kc; ++k)
            for (int64_t j0 = 0; j0 < full; j0 += {t.nr})
                memcpy(dst + j0*kc + k*{t.nr}, src + k*rs + j0, sizeof(float)*{t.nr});
        dst += full*kc;
        src += full;
        nc -= full;
    }}
    for (int64_t j0 = 0; j0 < nc; j0 += {t.nr}, dst += kc*{t.nr}) {{
        const int64_t nr = nc - j0 < {t.nr} ? nc - j0 : {t.nr};
        const float *restrict s = src + j0*cs;
        if (nr < {t.nr})
            for (int64_t k = 0; k < kc; ++k)
                for (int64_t j = nr; j < {t.nr}; ++j) dst[k*{t.nr} + j] = 0;
        if (cs == 1)
            for (int64_t k = 0; k < kc; ++k)
                for (int64_t j = 0; j < nr; ++j) dst[k*{t.nr} + j] = s[k*rs + j];
        else if (rs == 1)  /* columns contiguous (B^T row-major): a transpose */
            ember_transpose_{t.nr}(nr, kc, s, cs, dst, {t.nr});
        else
            for (int64_t j = 0; j < nr; ++j)
                for (int64_t k = 0; k < kc; ++k) dst[k*{t.nr} + j] = s[k*rs + j*cs];
    }}
}}

/* Pack the transposed implicit im2col matrix of a 2-D convolution into MR-row panels: row i =
 * output position (oy, ox) of [i0, i0 + mc), column k = (c, ky, kx) of [k0, k0 + kc), zero
 * outside the image. Per element index math: used where positions are few and channels many,
 * so packing is a small share of the work. */
static __attribute__((unused)) void ember_pack_im2col_a_{t.mr}(const float *restrict x, int64_t H, int64_t W,
        int64_t KH, int64_t KW, int64_t sy, int64_t sx, int64_t dy, int64_t dx, int64_t py,
        int64_t px, int64_t OW, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
        float *restrict dst) {{
    for (int64_t p0 = 0; p0 < mc; p0 += {t.mr}, dst += kc*{t.mr}) {{
        const int64_t mr = mc - p0 < {t.mr} ? mc - p0 : {t.mr};
        for (int64_t kk = 0; kk < kc; ++kk) {{
            const int64_t k = k0 + kk, c = k / (KH*KW), ky = k / KW % KH, kx = k % KW;
            for (int64_t r = 0; r < mr; ++r) {{
                const int64_t i = i0 + p0 + r, oy = i / OW, ox = i % OW;
                const int64_t iy = oy*sy + ky*dy - py, ix = ox*sx + kx*dx - px;
                dst[kk*mr + r] = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[(c*H + iy)*W + ix] : 0.0f;
            }}
        }}
    }}
}}

/* Pack the implicit im2col matrix of a 2-D convolution into NR-column panels: row k = (c, ky, kx)
 * of [k0, k0 + kc), column j = output position (oy, ox) of [n0, n0 + nc) (n0 a multiple of NR),
 * value x[c][oy*sy + ky*dy - py][ox*sx + kx*dx - px], zero outside the image. Runs of one output
 * row within one panel are copied at once, so the bounds tests are per run, not per element. */
static __attribute__((unused)) void ember_pack_im2col_{t.nr}(const float *restrict x, int64_t H, int64_t W, int64_t KH,
        int64_t KW, int64_t sy, int64_t sx, int64_t dy, int64_t dx, int64_t py, int64_t px,
        int64_t OW, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float *restrict dst) {{
    for (int64_t kk = 0; kk < kc; ++kk) {{
        const int64_t k = k0 + kk, c = k / (KH*KW), ky = k / KW % KH, kx = k % KW;
        const float *restrict xc = x + c*H*W;
        int64_t j = 0, oy = n0 / OW, ox = n0 % OW;
        while (j < nc) {{
            const int64_t lane = j % {t.nr};
            int64_t run = OW - ox;
            if (run > nc - j) run = nc - j;
            if (run > {t.nr} - lane) run = {t.nr} - lane;
            float *restrict d = dst + (j / {t.nr})*kc*{t.nr} + kk*{t.nr} + lane;
            const int64_t iy = oy*sy + ky*dy - py, ix0 = ox*sx + kx*dx - px;
            int64_t lo = 0, hi = 0;       /* the run's positions inside the image */
            if (iy >= 0 && iy < H && ix0 < W) {{
                lo = ix0 < 0 ? (-ix0 + sx - 1) / sx : 0;
                hi = (W - ix0 + sx - 1) / sx;
                if (hi > run) hi = run;
                if (lo > hi) lo = hi;
            }}
            for (int64_t t = 0; t < lo; ++t) d[t] = 0;
            if (hi > lo) {{
                const float *restrict s = xc + iy*W + ix0 + lo*sx;
                if (sx == 1) memcpy(d + lo, s, sizeof(float)*(size_t)(hi - lo));
                /* a whole panel row at stride 2 (MobileNetV2's first conv): a constant trip
                 * count, which GCC vectorizes (two loads and a permute per vector) */
                else if (sx == 2 && hi - lo == {t.nr}) for (int64_t t = 0; t < {t.nr}; ++t) d[t] = s[2*t];
                else for (int64_t t = 0; t < hi - lo; ++t) d[lo + t] = s[t*sx];
            }}
            for (int64_t t = hi; t < run; ++t) d[t] = 0;
            j += run;
            ox += run;
            if (ox == OW) {{ ox = 0; ++oy; }}
        }}
        if (nc % {t.nr}) {{
            float *restrict d = dst + (nc / {t.nr})*kc*{t.nr} + kk*{t.nr};
            for (int64_t lane = nc % {t.nr}; lane < {t.nr}; ++lane) d[lane] = 0;
        }}
    }}
}}
"""


def _transpose_c(t: GemmTiles) -> str:
    """ember_transpose_NR(rows, cols, src, ss, dst, ds): dst[c*ds + r] = src[r*ss + c], the
    packing of an operand read across its contiguous axis. With float SIMD, 4 x 4 blocks go
    through four 4-lane loads, eight shuffles and four stores, where copies cost a load and a
    store per element (BERT's Q.K^T, K^T packed: 1.02-1.05x quicker); the ragged edges, and
    cores without SIMD, copy one element at a time."""
    scalar_edges = """
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = c4; c < cols; ++c) dst[c*ds + r] = src[r*ss + c];
    for (int64_t c = 0; c < c4; ++c)
        for (int64_t r = r4; r < rows; ++r) dst[c*ds + r] = src[r*ss + c];"""
    head = f"""static __attribute__((unused)) void ember_transpose_{t.nr}(int64_t rows, int64_t cols,
        const float *restrict src, int64_t ss, float *restrict dst, int64_t ds) {{"""
    if t.scalar:
        return f"""{head}
    const int64_t r4 = 0, c4 = 0;{scalar_edges}
}}
"""
    # GCC spells a two-vector shuffle __builtin_shuffle(a, b, mask), clang
    # __builtin_shufflevector(a, b, i...)
    return f"""
typedef float ember_f32x4 __attribute__((vector_size(16)));
typedef float ember_f32x4u __attribute__((vector_size(16), aligned(4)));
typedef int ember_i32x4 __attribute__((vector_size(16)));
#if defined(__clang__)
#define EMBER_SHUF4(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define EMBER_SHUF4(a, b, i, j, k, l) __builtin_shuffle(a, b, (ember_i32x4){{i, j, k, l}})
#endif
{head}
    const int64_t r4 = rows & ~(int64_t)3, c4 = cols & ~(int64_t)3;
    for (int64_t r = 0; r < r4; r += 4)
        for (int64_t c = 0; c < c4; c += 4) {{
            const float *restrict s = src + r*ss + c;
            const ember_f32x4 x0 = *(const ember_f32x4u *)s, x1 = *(const ember_f32x4u *)(s + ss);
            const ember_f32x4 x2 = *(const ember_f32x4u *)(s + 2*ss);
            const ember_f32x4 x3 = *(const ember_f32x4u *)(s + 3*ss);
            const ember_f32x4 t0 = EMBER_SHUF4(x0, x1, 0, 4, 1, 5), t1 = EMBER_SHUF4(x0, x1, 2, 6, 3, 7);
            const ember_f32x4 t2 = EMBER_SHUF4(x2, x3, 0, 4, 1, 5), t3 = EMBER_SHUF4(x2, x3, 2, 6, 3, 7);
            float *restrict d = dst + c*ds + r;
            *(ember_f32x4u *)d = EMBER_SHUF4(t0, t2, 0, 1, 4, 5);
            *(ember_f32x4u *)(d + ds) = EMBER_SHUF4(t0, t2, 2, 3, 6, 7);
            *(ember_f32x4u *)(d + 2*ds) = EMBER_SHUF4(t1, t3, 0, 1, 4, 5);
            *(ember_f32x4u *)(d + 3*ds) = EMBER_SHUF4(t1, t3, 2, 3, 6, 7);
        }}{scalar_edges}
}}
"""


def _vector_ukr_c(t: GemmTiles) -> str:
    """The micro-tile as mr x 2 vectors of t.lanes floats (GCC/Clang vector extensions)."""
    lanes = t.lanes
    splat = "{" + ", ".join(["s"] * lanes) + "}"
    return f"""
typedef float ember_f32v{lanes} __attribute__((vector_size({4 * lanes})));
/* the same, for loads from memory only float-aligned (packed data in the weights blob and
 * the arena may sit at any 4-byte offset of the caller's allocation) */
typedef float ember_f32v{lanes}u __attribute__((vector_size({4 * lanes}), aligned(4)));

/* One row of the micro-tile (M = 1: an MLP's layers, a classifier head; B streams from L2 or
 * L3 once): its two accumulators would each be a chain of dependent multiply-adds, one per
 * FMA latency (5 cycles on Zen, 4 on Skylake), a third of the FMA throughput. Four chains per
 * vector, over k modulo 4, keep eight multiply-adds in flight. B is fetched 4 KiB ahead (the
 * panels lie end to end, so past a panel's end is the next one's start): the MLP 0.90-0.97 of
 * its time (L3 latency, which the hardware prefetcher alone does not hide). half: c[0:NR/2]
 * only. */
static inline __attribute__((always_inline)) void ember_sgemm_row_{t.nr}(
        int64_t kc, const float *restrict a, const float *restrict b, float *restrict c,
        const int half, int accumulate) {{
    ember_f32v{lanes} s0[4] = {{{{0}}}}, s1[4] = {{{{0}}}};
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {{
        for (int l = 0; l < 4*{t.nr}; l += 16) __builtin_prefetch(b + k*{t.nr} + 1024 + l);
        for (int u = 0; u < 4; ++u) {{
            const float s = a[k + u];
            const ember_f32v{lanes} ar = {splat};
            s0[u] += ar * *(const ember_f32v{lanes}u *)(b + (k + u)*{t.nr});
            if (!half) s1[u] += ar * *(const ember_f32v{lanes}u *)(b + (k + u)*{t.nr} + {lanes});
        }}
    }}
    for (; k < kc; ++k) {{
        const float s = a[k];
        const ember_f32v{lanes} ar = {splat};
        s0[0] += ar * *(const ember_f32v{lanes}u *)(b + k*{t.nr});
        if (!half) s1[0] += ar * *(const ember_f32v{lanes}u *)(b + k*{t.nr} + {lanes});
    }}
    ember_f32v{lanes}u *row = (ember_f32v{lanes}u *)c;
    const ember_f32v{lanes} r0 = (s0[0] + s0[1]) + (s0[2] + s0[3]);
    row[0] = accumulate ? row[0] + r0 : r0;
    if (!half) {{
        const ember_f32v{lanes} r1 = (s1[0] + s1[1]) + (s1[2] + s1[3]);
        row[1] = accumulate ? row[1] + r1 : r1;
    }}
}}

/* c[0:mr][0:NR] (row stride ldc) = (accumulate ? c : 0) + sum over k of a[k][0:mr] (x) b[k][0:NR]
 * (a packed, or with lda > 0 row r read in place at a + r*lda; row k of b at b + k*NR when
 * packed, or at b + offs[k] read in place). Always inlined with a constant mr and offs (and
 * lda constant 0 where a is packed), so the loops unroll and the 2*mr accumulators stay in
 * registers. lda constant -1: a packed, only c[0:mr][0:NR/2] (a last panel of B at most one
 * vector wide: half the multiply-adds). */
static inline __attribute__((always_inline)) void ember_sgemm_ukr_{t.nr}(
        const int mr, int64_t kc, const float *restrict a, int64_t lda, const float *restrict b,
        const int64_t *restrict offs, int64_t b1, float *restrict c, int64_t ldc,
        int accumulate) {{
    ember_f32v{lanes} c0[{t.mr}], c1[{t.mr}];
    if (mr == 1 && !offs) {{   /* one row: 2 accumulators would wait on the multiply-add */
        ember_sgemm_row_{t.nr}(kc, a, b, c, lda < 0, accumulate);   /* latency; see below */
        return;
    }}
    for (int r = 0; r < mr; ++r) {{     /* c is added at the end: its loads must not hold */
        c0[r] = (ember_f32v{lanes}){{0}};  /* up the first multiply-adds; fetch it meanwhile */
        c1[r] = c0[r];
        __builtin_prefetch(c + r*ldc, 1);
    }}
    for (int64_t k = 0; k < kc; ++k) {{
        const float *restrict bk = offs ? b + offs[k] : b + k*{t.nr};
        const ember_f32v{lanes} b0 = *(const ember_f32v{lanes}u *)bk;
        const ember_f32v{lanes} v1 = lda < 0 ? b0 : *(const ember_f32v{lanes}u *)(bk + b1);
        for (int r = 0; r < mr; ++r) {{
            const float s = lda > 0 ? a[r*lda + k] : a[k*mr + r];
            const ember_f32v{lanes} ar = {splat};
            c0[r] += ar * b0;
            if (lda >= 0) c1[r] += ar * v1;
        }}
    }}
    for (int r = 0; r < mr; ++r) {{
        ember_f32v{lanes}u *row = (ember_f32v{lanes}u *)(c + r*ldc);
        row[0] = accumulate ? row[0] + c0[r] : c0[r];
        if (lda >= 0) row[1] = accumulate ? row[1] + c1[r] : c1[r];
    }}
}}
"""


def _scalar_ukr_c(t: GemmTiles) -> str:
    """The micro-tile as mr x NR float scalars, for a core without float SIMD (a Cortex-M FPU,
    or soft float): its loops are unrolled (GCC's -O2 would not), so the accumulators live in
    registers; a vector type there would be split into scalars anyway, through memory."""
    return f"""
/* c[0:mr][0:NR] (row stride ldc) = (accumulate ? c : 0) + sum over k of a[k][0:mr] (x) b[k][0:NR]
 * (a packed, or with lda > 0 row r read in place at a + r*lda; row k of b at b + k*NR when
 * packed, or at b + offs[k] read in place). Always inlined with a constant mr and offs. */
static inline __attribute__((always_inline)) void ember_sgemm_ukr_{t.nr}(
        const int mr, int64_t kc, const float *restrict a, int64_t lda, const float *restrict b,
        const int64_t *restrict offs, int64_t b1, float *restrict c, int64_t ldc,
        int accumulate) {{
    (void)b1;
    float acc[{t.mr}][{t.nr}];
    _Pragma("GCC unroll {t.mr}") for (int r = 0; r < mr; ++r)
        _Pragma("GCC unroll {t.nr}") for (int j = 0; j < {t.nr}; ++j) acc[r][j] = 0.0f;
    for (int64_t k = 0; k < kc; ++k) {{
        const float *restrict bk = offs ? b + offs[k] : b + k*{t.nr};
        _Pragma("GCC unroll {t.mr}") for (int r = 0; r < mr; ++r) {{
            const float s = lda ? a[r*lda + k] : a[k*mr + r];
            _Pragma("GCC unroll {t.nr}") for (int j = 0; j < {t.nr}; ++j) acc[r][j] += s * bk[j];
        }}
    }}
    _Pragma("GCC unroll {t.mr}") for (int r = 0; r < mr; ++r)
        _Pragma("GCC unroll {t.nr}") for (int j = 0; j < {t.nr}; ++j)
            c[r*ldc + j] = accumulate ? c[r*ldc + j] + acc[r][j] : acc[r][j];
}}
"""


def _scalar_conv_panel_c(t: GemmTiles) -> str:
    """The im2col packing of scalar tiles (a microcontroller): one nr-column panel of all K
    rows at a time, no scratch beyond it; 32-bit index math (64-bit division is a library
    call on a 32-bit core), the bounds of each tap and lane tested once per panel."""
    return f"""
/* Pack the im2col panel of a 2-D convolution for output positions [j0, j0 + NR) (zero past
 * N = OH*OW) and every row k = (c, ky, kx), k-major as pack_b's panels, from the C channels of
 * x (C x H x W). tab (KH*KW*NR ints) holds each tap's and lane's offset into a channel, or -1
 * outside the image, so the copy per channel is a test and a load per element. */
static __attribute__((unused)) void ember_conv_panel_{t.nr}(const float *restrict x, int H, int W,
        int KH, int KW, int sy, int sx, int dy, int dx, int py, int px, int OW, int N, int C,
        int j0, int *restrict tab, float *restrict dst) {{
    for (int l = 0; l < {t.nr}; ++l) {{
        const int j = j0 + l, oy = j / OW, ox = j % OW;
        for (int ky = 0; ky < KH; ++ky) {{
            const int iy = oy*sy + ky*dy - py;
            for (int kx = 0; kx < KW; ++kx) {{
                const int ix = ox*sx + kx*dx - px;
                tab[(ky*KW + kx)*{t.nr} + l] =
                    j < N && iy >= 0 && iy < H && ix >= 0 && ix < W ? iy*W + ix : -1;
            }}
        }}
    }}
    for (int c = 0; c < C; ++c, x += H*W)
        for (int e = 0; e < KH*KW*{t.nr}; ++e, ++dst) *dst = tab[e] >= 0 ? x[tab[e]] : 0.0f;
}}
"""
