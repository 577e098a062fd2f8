"""Vectorizable float32 math: branch-free C replacements for libm's expf, erff, tanhf, logf;
a sigmoid; and the row reductions of Softmax and the normalizations.

A call to libm inside a loop stops GCC's vectorizer, so the float32 elementwise ops (and
Softmax, Gelu, the activations) use these `static inline` functions from the generated
code's prelude instead. Each is straight-line float/int32 arithmetic with selects (no calls,
no data-dependent branches), so a loop calling them compiles to 8-wide AVX2 (or NEON) code.

Accuracy, measured against double-precision libm on every 61st float32 bit pattern (all
binades, NaNs included), with and without FMA contraction: ember_expf < 1 ulp, ember_logf
< 1 ulp, ember_log1pf < 1.5 ulp, ember_tanhf < 1.5 ulp, ember_sigmoidf < 3 ulp, ember_erff
< 3 ulp. Edge values follow C99 Annex F: NaN propagates, exp overflows to +Inf and underflows through the
denormals to +0, erf/tanh saturate to +-1 and keep the sign of -0, log(0) = -Inf,
log(x < 0) = NaN. float64 and float16 keep libm.

Coefficients are near-minimax fits (Lawson's iteratively reweighted least squares) of:
exp(r) = 1 + r + r^2 P(r) on |r| <= ln2/2; log1p(f) = f - f^2/2 + f^3 P(f) on
[sqrt(1/2) - 1, sqrt(2) - 1]; erf(x) = x + x P(x^2) on |x| < 0.921875 and
erf(t) = 1 - exp(P(t - 2.25)) on [0.921875, 4]; tanh(x) = x + x^3 P(x^2) on |x| < 0.625
and 1 - 2 / (exp(2|x|) + 1) above.
"""
from __future__ import annotations

#: libm function -> its float32 replacement here (read by the elementwise expression table)
FLOAT32_FUNCTIONS = {"exp": "ember_expf", "log": "ember_logf", "log1p": "ember_log1pf",
                     "erf": "ember_erff", "tanh": "ember_tanhf"}

_FUNCTIONS_C = r"""
static inline float ember_i2f(int32_t i) { union { int32_t i; float f; } u; u.i = i; return u.f; }
static inline int32_t ember_f2i(float f) { union { int32_t i; float f; } u; u.f = f; return u.i; }
/* c ? a : b for c in {0, 1}, as bit operations: GCC (with its default -ftrapping-math) will
   not if-convert a ?: whose arm computes in floating point, and then cannot vectorize. */
static inline float ember_selectf(int32_t c, float a, float b) {
    const int32_t m = -c;
    return ember_i2f((ember_f2i(a) & m) | (ember_f2i(b) & ~m));
}
static inline float ember_absf(float x) { return ember_i2f(ember_f2i(x) & 0x7fffffff); }
static inline float ember_copysignf(float mag, float sgn) {
    return ember_i2f((ember_f2i(mag) & 0x7fffffff) | (ember_f2i(sgn) & (int32_t)0x80000000));
}

/* exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k ln2 (Cody-Waite, two parts): returns
   exp(r) and k, for |x| < 2^22 (NaN gives NaN). */
static inline float ember_exp_reduced(float x, int32_t *k) {
    /* adding 1.5 * 2^23 rounds to an integer n that the low mantissa bits then hold */
    const float t = x * 1.44269502162933349609f + 12582912.0f;
    const float n = t - 12582912.0f;
    *k = ember_f2i(t) - 0x4b400000;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.98577952687628567e-4f;
    p = p * r + 1.39335973653942347e-3f;
    p = p * r + 8.33336077630519867e-3f;
    p = p * r + 4.16664667427539825e-2f;
    p = p * r + 1.66666671633720398e-1f;
    p = p * r + 0.5f;
    return (p * r) * r + r + 1.0f;
}

/* exp(x) where the result is a normal float (-87 < x < 88) or x is NaN: no range checks. */
static inline float ember_expf_normal(float x) {
    int32_t k;
    const float y = ember_exp_reduced(x, &k);
    return y * ember_i2f((k + 127) << 23);
}

/* exp(x) for every x: 2^k is applied as two factors so that results in the denormal range
   round once, correctly; overflow gives +Inf. */
static inline float ember_expf(float x) {
    float c = ember_selectf(x > -104.0f, x, -104.0f);       /* NaN becomes -104 here */
    c = ember_selectf(c < 88.72283172607421875f, c, 88.72283172607421875f);
    int32_t k;
    const float y = ember_exp_reduced(c, &k);
    const int32_t k1 = k >> 1;
    const float s = y * ember_i2f((k1 + 127) << 23) * ember_i2f((k - k1 + 127) << 23);
    return ember_selectf(x == x, ember_selectf(x > 88.72283172607421875f, INFINITY, s), x);
}

/* 1 / (1 + exp(-x)) without overflow: e / (1 + e) with e = exp(-|x|) for x < 0, so results
   down in the denormal range keep their relative accuracy. */
static inline float ember_sigmoidf(float x) {
    const float e = ember_expf(-ember_absf(x));
    const float r = 1.0f / (1.0f + e);
    return ember_selectf(x < 0.0f, e * r, r);
}

/* log(x) = e ln2 + log1p(f), x = 2^e (1 + f), 1 + f in [sqrt(1/2), sqrt(2)). */
static inline float ember_logf(float x) {
    const int32_t tiny = x < 1.17549435e-38f;       /* denormals: scale into the normal range */
    /* subtracting the bits of sqrt(1/2) puts the mantissa in [sqrt(1/2), sqrt(2)) */
    const int32_t t = ember_f2i(ember_selectf(tiny, x * 8388608.0f, x)) - 0x3f3504f3;
    const float e = (float)((t >> 23) - 23 * tiny);
    const float f = ember_i2f((t & 0x007fffff) + 0x3f3504f3) - 1.0f;
    float p = 7.03854039311409e-2f;
    p = p * f - 1.15089587867260e-1f;
    p = p * f + 1.16737738251686e-1f;
    p = p * f - 1.24208949506283e-1f;
    p = p * f + 1.42498254776001e-1f;
    p = p * f - 1.66680306196213e-1f;
    p = p * f + 2.00006917119026e-1f;
    p = p * f - 2.49999940395355e-1f;
    p = p * f + 3.33333313465118e-1f;
    const float f2 = f * f;
    float r = f2 * f * p + e * -2.12194440e-4f;
    r = r - 0.5f * f2 + f;
    r = r + e * 0.693359375f;
    r = ember_selectf(x == INFINITY, x, r);
    r = ember_selectf(x == 0.0f, -INFINITY, r);
    return ember_selectf((x < 0.0f) | (x != x), NAN, r);
}

/* log(1 + u) = log(w) + (u - (w - 1)) / w with w = 1 + u rounded: the quotient restores what
   rounding w lost, so small u keep full relative accuracy. */
static inline float ember_log1pf(float u) {
    const float w = 1.0f + u;
    const float l = ember_logf(w);
    return ember_selectf((w > 0.0f) & (w < INFINITY), l + (u - (w - 1.0f)) / w, l);
}

static inline float ember_erff(float x) {
    const float a = ember_absf(x);
    const float s = x * x;
    float p = -6.01339328568428755e-4f;            /* |x| < 0.921875: x + x P(x^2) */
    p = p * s + 4.99800080433487892e-3f;
    p = p * s - 2.67702322453260422e-2f;
    p = p * s + 1.12819269299507141e-1f;
    p = p * s - 3.76125067472457886e-1f;
    p = p * s + 1.28379151225090027e-1f;
    /* 1 - exp(P(|x| - 2.25)) above; P is in [-19, -1.6], NaN passes through the clamp */
    const float u = ember_selectf(a > 4.0f, 4.0f, a) - 2.25f;
    float q = 1.60249419423053040e-6f;
    q = q * u - 1.65097735589370131e-5f;
    q = q * u + 1.03533529909327626e-4f;
    q = q * u - 5.55196893401443958e-4f;
    q = q * u + 2.77061457745730877e-3f;
    q = q * u - 1.33122969418764114e-2f;
    q = q * u - 9.34867382049560547e-1f;
    q = q * u - 4.88291406631469727f;
    q = q * u - 6.52746009826660156f;
    /* odd: computed for |x|, the sign (of -0 too) put back last */
    return ember_copysignf(ember_selectf(a < 0.921875f, p * a + a, 1.0f - ember_expf_normal(q)), x);
}

/* Gelu(x) = x/2 (1 + erf(x / sqrt 2)) (Gelu, and the Div-Erf-Add-Mul-Mul chain fuse-gelu
   turns into one): erf(x / sqrt 2) = x P(x^2) / Q(x^2) for |x| < 4 sqrt 2, a rational
   near-minimax fit (Loeb/Lawson iterations) with absolute error < 3e-7 in float, and +-1
   beyond. Half the work of ember_erff, whose few-ulp accuracy near +-1 Gelu cannot use: the
   result's error is at most 1.1e-6 absolute, 2.5e-7 relative for x > 0. NaN propagates;
   -Inf gives NaN, as the formula does. */
static inline float ember_geluf(float x) {
    const float a = ember_absf(x);
    const float c = ember_selectf(a < 5.65685424949238f, a, 5.65685424949238f);
    const float t = c * c;
    float p = 4.36332068e-08f;
    p = p * t + 1.27286861e-05f;
    p = p * t + 3.53857090e-04f;
    p = p * t + 9.45169636e-03f;
    p = p * t + 6.93837144e-02f;
    p = p * t + 7.97884427e-01f;
    float q = 1.17116580e-06f;
    q = q * t + 7.60168968e-05f;
    q = q * t + 1.93050697e-03f;
    q = q * t + 2.91188042e-02f;
    q = q * t + 2.53625174e-01f;
    q = q * t + 1.0f;
    const float e = ember_selectf(a < 5.65685424949238f, c * p / q, 1.0f);
    return 0.5f * x * (1.0f + ember_copysignf(e, x));
}

static inline float ember_tanhf(float x) {
    const float a = ember_absf(x);
    const float s = x * x;
    float p = 2.31549143791198730e-3f;             /* |x| < 0.625: x + x^3 P(x^2) */
    p = p * s - 8.36823880672454834e-3f;
    p = p * s + 2.17783227562904358e-2f;
    p = p * s - 5.39608411490917206e-2f;
    p = p * s + 1.33333146572113037e-1f;
    p = p * s - 3.33333343267440796e-1f;
    const float e = ember_expf_normal(2.0f * ember_selectf(a > 10.0f, 10.0f, a));
    /* odd: computed for |x|, the sign (of -0 too) put back last */
    return ember_copysignf(ember_selectf(a < 0.625f, (p * s) * a + a, 1.0f - 2.0f / (e + 1.0f)), x);
}
"""

# Row reductions for Softmax and the normalizations. A floating-point reduction only
# vectorizes when its order may change, which GCC will not do without -ffast-math, so these
# keep partial results in two explicit vectors (GCC/Clang vector extensions, lowered to AVX2
# or NEON) and combine their lanes pairwise at the end. The helpers take vectors by pointer:
# a 32-byte vector passed or returned by value changes the x86 ABI without AVX, and GCC warns
# of it (-Wpsabi) even for static functions (`ember export`'s projects build with -Werror).
_ROWS_C = r"""
typedef float ember_v8f __attribute__((vector_size(32)));
typedef int32_t ember_v8i __attribute__((vector_size(32)));
typedef float ember_v4f __attribute__((vector_size(16)));
typedef double ember_v4d __attribute__((vector_size(32)));

static inline double ember_v4d_total(const ember_v4d *a) {
    return ((*a)[0] + (*a)[2]) + ((*a)[1] + (*a)[3]);
}
static inline void ember_v8f_load(ember_v8f *v, const float *p) { memcpy(v, p, sizeof *v); }
/* *acc = max(*x, *acc): NaN in x never wins */
static inline void ember_v8f_max(ember_v8f *acc, const ember_v8f *x) {
    const ember_v8i m = *x > *acc;
    *acc = (ember_v8f)(((ember_v8i)*x & m) | ((ember_v8i)*acc & ~m));
}

static inline float ember_row_maxf(const float *restrict p, int64_t n) {
    ember_v8f a = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                   -INFINITY, -INFINITY, -INFINITY, -INFINITY}, b = a;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        ember_v8f x, y;
        ember_v8f_load(&x, p + j);
        ember_v8f_load(&y, p + j + 8);
        ember_v8f_max(&a, &x);
        ember_v8f_max(&b, &y);
    }
    ember_v8f_max(&a, &b);
    float m = a[0];
    for (int l = 1; l < 8; ++l) m = a[l] > m ? a[l] : m;
    for (; j < n; ++j) m = p[j] > m ? p[j] : m;
    return m;
}

/* exp(x) for Softmax's x = value - row maximum <= 0, 8 lanes: results below the smallest
   normal float (x < -87) flush to 0, since a softmax term that small is far below every
   tolerance and arithmetic on denormals is slow (masked scores sit at -10000); NaN gives NaN.
   The reduction and polynomial are ember_exp_reduced's. */
static inline void ember_v8f_exp_neg(ember_v8f *v) {
    ember_v8f x = *v;
    const ember_v8i tiny = x < -87.0f;
    x = (ember_v8f)(((ember_v8i)x & ~tiny) | ((ember_v8i)(ember_v8f){-87.0f, -87.0f, -87.0f,
        -87.0f, -87.0f, -87.0f, -87.0f, -87.0f} & tiny));
    const ember_v8f t = x * 1.44269502162933349609f + 12582912.0f;
    const ember_v8f n = t - 12582912.0f;
    const ember_v8i k = (ember_v8i)t - 0x4b400000;
    ember_v8f r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    ember_v8f p = r * 1.98577952687628567e-4f + 1.39335973653942347e-3f;
    p = p * r + 8.33336077630519867e-3f;
    p = p * r + 4.16664667427539825e-2f;
    p = p * r + 1.66666671633720398e-1f;
    p = p * r + 0.5f;
    const ember_v8f y = ((p * r) * r + r + 1.0f) * (ember_v8f)((k + 127) << 23);
    *v = (ember_v8f)((ember_v8i)y & ~tiny);
}

/* Softmax (log = 0) or LogSoftmax (log = 1) of the n contiguous floats at p, into q: the row
   maximum, then exp and its sum in one vector pass (a ragged end padded with -Inf, whose exp
   is 0), then the scaling. A row of -Inf, or one holding +Inf or NaN, gives NaN (through
   -Inf - -Inf, +Inf - +Inf or NaN in the exp), as in onnxruntime. */
static inline void ember_softmax_rowf(const float *restrict p, float *restrict q, int64_t n,
                                      int log) {
    const float m = ember_row_maxf(p, n);
    ember_v8f a = {0}, b = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        ember_v8f e, f;
        ember_v8f_load(&e, p + j);
        ember_v8f_load(&f, p + j + 8);
        e -= m;
        f -= m;
        ember_v8f_exp_neg(&e);
        ember_v8f_exp_neg(&f);
        a += e;
        b += f;
        if (!log) { memcpy(q + j, &e, sizeof e); memcpy(q + j + 8, &f, sizeof f); }
    }
    if (j < n) {
        float v[16];
        for (int l = 0; l < 16; ++l) v[l] = j + l < n ? p[j + l] : -INFINITY;
        ember_v8f e, f;
        ember_v8f_load(&e, v);
        ember_v8f_load(&f, v + 8);
        e -= m;
        f -= m;
        ember_v8f_exp_neg(&e);
        ember_v8f_exp_neg(&f);
        a += e;
        b += f;
        if (!log) for (int l = 0; j + l < n; ++l) q[j + l] = l < 8 ? e[l] : f[l - 8];
    }
    a += b;
    const float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    if (log) {
        const float ls = logf(s);
        for (j = 0; j < n; ++j) q[j] = p[j] - m - ls;
    } else {
        const float r = 1.0f / s;
        for (j = 0; j < n; ++j) q[j] = q[j] * r;
    }
}

static inline float ember_row_sumf(const float *restrict p, int64_t n) {
    ember_v8f a = {0}, b = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        ember_v8f x, y;
        ember_v8f_load(&x, p + j);
        ember_v8f_load(&y, p + j + 8);
        a += x;
        b += y;
    }
    a += b;
    float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    for (; j < n; ++j) s += p[j];
    return s;
}
"""

# Mean and variance (two passes, in double) of n contiguous values, one version per C type.
_MOMENTS_C = r"""
static inline void ember_v4d_load_{T}(ember_v4d *out, const {T} *p) {{
    {LOAD}
}}
static inline void ember_moments_{T}(const {T} *restrict p, int64_t n, double *mean,
                                      double *var) {{
    const double count = (double)(n > 0 ? n : 1);
    ember_v4d a = {{0}}, b = {{0}};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {{
        ember_v4d x, y;
        ember_v4d_load_{T}(&x, p + j);
        ember_v4d_load_{T}(&y, p + j + 4);
        a += x;
        b += y;
    }}
    a += b;
    double s = ember_v4d_total(&a);
    for (; j < n; ++j) s += (double)p[j];
    const double mu = s / count;
    a = b = (ember_v4d){{0}};
    for (j = 0; j + 8 <= n; j += 8) {{
        ember_v4d d, e;
        ember_v4d_load_{T}(&d, p + j);
        ember_v4d_load_{T}(&e, p + j + 4);
        d -= mu;
        e -= mu;
        a += d * d;
        b += e * e;
    }}
    a += b;
    s = ember_v4d_total(&a);
    for (; j < n; ++j) s += ((double)p[j] - mu) * ((double)p[j] - mu);
    *mean = mu;
    *var = s / count;
}}
"""
_LOADS = {
    "float": "ember_v4f v; memcpy(&v, p, sizeof v); *out = __builtin_convertvector(v, ember_v4d);",
    "double": "memcpy(out, p, sizeof *out);",
}

#: C types that have an `ember_moments_<T>` helper
MOMENT_TYPES = tuple(_LOADS)

VECMATH_C = _FUNCTIONS_C + _ROWS_C + "".join(
    _MOMENTS_C.format(T=t, LOAD=load) for t, load in _LOADS.items())
