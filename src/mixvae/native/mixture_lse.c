/* Log-sum-exp of a diagonal Gaussian mixture in a few dimensions, forward and backward, fused.
 *
 * For rows z_n (n_rows, D) and components k with means m (D, K), h (D, K) and c (K,), all in bits
 * (one row of m and h per dimension, so the inner loops run over independent lanes):
 *     a_nk = c_k - sum_d h_dk (z_nd - m_dk)^2          (the direct form: each term rounds relative
 *                                                       to itself, no cancellation)
 *     forward:   out_n = log2 sum_k 2^(a_nk)           (two passes over k: the maximum, then the sum)
 *     forward_grad: out_n and, in the same second pass, w_nd = sum_k 2^(a_nk - out_n) h_dk (z_nd - m_dk)
 *                (n_rows, D): the gradient's part for rows alone, when m, h and c need none (one
 *                2^x per pair instead of one in the forward and one in the backward); 0 for a row
 *                whose terms are all -inf, so that the caller's zero gradient for it stays 0
 *     backward:  r_nk  = g_n 2^(a_nk - out_n)
 *                gz_nd = sum_k r_nk h_dk (z_nd - m_dk)                           (n_rows, D), written
 *                S_k   = sum_n r_nk [(z_nd - m_dk)_d, (z_nd - m_dk)^2_d, 1]      (K, 2D + 1), added to
 * With h_dk = log2(e) / (2 v_dk) and c_k = log2(e) (log w_k - (D log 2pi + sum_d log v_dk) / 2),
 * a_nk is log2 of w_k N(z_n; m_k, diag(v_k)); the caller (mixvae.native, mixvae.distributions)
 * turns gz and S into the gradients with respect to z, the means, log-variances and log-weights.
 *
 * Rows go LANES at a time, one lane per row, so every loop the compiler vectorises runs over
 * independent lanes: no reassociation and no -ffast-math. a is never stored; the backward
 * recomputes it. The column sums S add FLUSH blocks of rows per lane in float32 and then go into a
 * float64 total, so their rounding does not grow with the number of rows. 2^x is a degree-7
 * polynomial on [-1/2, 1/2] (Taylor, error below 1e-8 relative) times a power of two; exponents
 * below -126 (terms below 2^-126 of a row's largest, which change nothing in float32) and NaN
 * (a row whose terms are all -inf) give 0, exponents above 127 give 2^127. The caller passes
 * finite z, m, h and c; terms can still overflow to -inf, and such rows (out = -inf) are done
 * again by the caller with an incoming gradient of 0, which then adds exactly 0 here.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>

#define LANES 16
#define FLUSH 32

static inline float exp2_flushed(float x) {
    int keep = x >= -126.0f;                                    /* false for NaN as well */
    float y = keep ? (x < 127.0f ? x : 127.0f) : -126.0f;       /* no NaN reaches the conversion */
    float n = nearbyintf(y);
    float f = y - n;                                            /* [-1/2, 1/2] */
    float p = 1.5252734e-05f;                                   /* ln(2)^i / i!, i = 7 ... 0 */
    p = p * f + 1.5403530e-04f;
    p = p * f + 1.3333558e-03f;
    p = p * f + 9.6181291e-03f;
    p = p * f + 5.5504109e-02f;
    p = p * f + 2.4022651e-01f;
    p = p * f + 6.9314718e-01f;
    p = p * f + 1.0f;
    union { uint32_t u; float v; } s;
    s.u = (uint32_t)((int32_t)n + 127) << 23;                   /* 2^n, n in [-126, 127] */
    return keep ? p * s.v : 0.0f;
}

static void flush(float *acc, double *total, int64_t n) {
    for (int64_t t = 0; t < n; t++) {
        double s = 0.0;
        for (int j = 0; j < LANES; j++) s += acc[t * LANES + j];
        total[t] += s;
    }
    memset(acc, 0, sizeof(float) * (size_t)n * LANES);
}

/* The rows i ... i + LANES - 1 (the last block repeats row i in its missing lanes). */
#define LOAD_ROWS(D)                                                                              \
    int64_t m_ = n_rows - i < LANES ? n_rows - i : LANES;                                         \
    float x[D][LANES];                                                                            \
    for (int j = 0; j < LANES; j++)                                                               \
        for (int d = 0; d < D; d++) x[d][j] = z[(i + (j < m_ ? j : 0)) * D + d];

#define TERM(D, a, diff)                                                                          \
    float a = c[k], diff[D];                                                                      \
    for (int d = 0; d < D; d++) {                                                                 \
        diff[d] = x[d][j] - mean[d * K + k];                                                      \
        a -= h[d * K + k] * (diff[d] * diff[d]);                                                  \
    }

/* top[j] = max_k a_jk of the block's rows, and sum[j] = 0: the forward passes' first pass. */
#define ROW_MAX(D)                                                                                \
    for (int j = 0; j < LANES; j++) { top[j] = -INFINITY; sum[j] = 0.0f; }                        \
    for (int64_t k = 0; k < K; k++)                                                               \
        for (int j = 0; j < LANES; j++) {                                                         \
            TERM(D, a, diff)                                                                      \
            top[j] = a > top[j] ? a : top[j];                                                     \
        }

/* One forward/backward pair per dimension D, so the loops over dimensions unroll. */
#define DEFINE_KERNELS(D)                                                                         \
void mixture_lse_forward_##D(const float *z, int64_t n_rows, const float *mean, const float *h,   \
                             const float *c, int64_t K, float *out) {                             \
    for (int64_t i = 0; i < n_rows; i += LANES) {                                                 \
        LOAD_ROWS(D)                                                                              \
        float top[LANES], sum[LANES];                                                             \
        ROW_MAX(D)                                                                                \
        for (int64_t k = 0; k < K; k++)                                                           \
            for (int j = 0; j < LANES; j++) {                                                     \
                TERM(D, a, diff)                                                                  \
                sum[j] += exp2_flushed(a - top[j]);                                               \
            }                                                                                     \
        for (int j = 0; j < m_; j++) out[i + j] = top[j] + log2f(sum[j]);                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void mixture_lse_forward_grad_##D(const float *z, int64_t n_rows, const float *mean,              \
                                  const float *h, const float *c, int64_t K, float *out, float *w) { \
    for (int64_t i = 0; i < n_rows; i += LANES) {                                                 \
        LOAD_ROWS(D)                                                                              \
        float top[LANES], sum[LANES], gx[D][LANES];                                               \
        for (int j = 0; j < LANES; j++)                                                           \
            for (int d = 0; d < D; d++) gx[d][j] = 0.0f;                                          \
        ROW_MAX(D)                                                                                \
        for (int64_t k = 0; k < K; k++)                                                           \
            for (int j = 0; j < LANES; j++) {                                                     \
                TERM(D, a, diff)                                                                  \
                float e = exp2_flushed(a - top[j]);                                               \
                sum[j] += e;                                                                      \
                for (int d = 0; d < D; d++) gx[d][j] += (e * diff[d]) * h[d * K + k];             \
            }                                                                                     \
        for (int j = 0; j < m_; j++) {                                                            \
            out[i + j] = top[j] + log2f(sum[j]);                                                  \
            for (int d = 0; d < D; d++) w[(i + j) * D + d] = sum[j] > 0.0f ? gx[d][j] / sum[j] : 0.0f; \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void mixture_lse_backward_##D(const float *z, int64_t n_rows, const float *mean, const float *h,  \
                              const float *c, int64_t K, const float *out, const float *g,        \
                              float *gz, float *S, float *acc, double *total) {                   \
    const int64_t width = 2 * D + 1;                                                              \
    memset(acc, 0, sizeof(float) * (size_t)(K * width * LANES));                                  \
    memset(total, 0, sizeof(double) * (size_t)(K * width));                                       \
    for (int64_t i = 0; i < n_rows; i += LANES) {                                                 \
        LOAD_ROWS(D)                                                                              \
        float o[LANES], s[LANES], gx[D][LANES];                                                   \
        for (int j = 0; j < LANES; j++) {                                                         \
            o[j] = out[i + (j < m_ ? j : 0)];                                                     \
            s[j] = j < m_ ? g[i + j] : 0.0f;                  /* missing lanes add nothing */     \
            for (int d = 0; d < D; d++) gx[d][j] = 0.0f;                                          \
        }                                                                                         \
        for (int64_t k = 0; k < K; k++) {                                                         \
            float *ak = acc + k * width * LANES;                                                  \
            for (int j = 0; j < LANES; j++) {                                                     \
                TERM(D, a, diff)                                                                  \
                float r = s[j] * exp2_flushed(a - o[j]);                                          \
                for (int d = 0; d < D; d++) {                                                     \
                    float rd = r * diff[d];                                                       \
                    gx[d][j] += rd * h[d * K + k];                                                \
                    ak[d * LANES + j] += rd;                                                      \
                    ak[(D + d) * LANES + j] += rd * diff[d];                                      \
                }                                                                                 \
                ak[2 * D * LANES + j] += r;                                                       \
            }                                                                                     \
        }                                                                                         \
        for (int j = 0; j < m_; j++)                                                              \
            for (int d = 0; d < D; d++) gz[(i + j) * D + d] = gx[d][j];                           \
        if ((i / LANES) % FLUSH == FLUSH - 1 || i + LANES >= n_rows)                              \
            flush(acc, total, K * width);                                                         \
    }                                                                                             \
    for (int64_t t = 0; t < K * width; t++) S[t] += (float)total[t];                              \
}

DEFINE_KERNELS(1)
DEFINE_KERNELS(2)
DEFINE_KERNELS(3)
DEFINE_KERNELS(4)
