// fastgd CuPy backend: dense-network kernels (a linear model is the network with one layer).
//
// One source, compiled by NVRTC through cupy.RawModule (fastgd.kernels.cupy_module). The
// dtype T (float/double), the loss and the activation are template parameters, selected
// per module with name_expressions such as "grad_step<float, 2, 0>"; layer sizes are
// runtime data (the int64 `lay` table), so one module serves every network shape.
//
// The design, the math and the memory layouts are those of kernels/cuda/dense.py (the
// Numba-CUDA kernels), read that docstring first:
//   * theta: flat parameters W1, b1, W2, b2, ... with W (n_in, n_out) row-major;
//   * lay:   int64 (L, 6) rows  n_in, n_out, w_off, b_off, a_in, a_out;
//   * S:     scratch, one row of 2*A values per thread: [a_0 | a_1 | ... | z_L] then
//            [unused | d_1 | ... | d_L], d_l = dLoss/dz_l of the row;
//   * perm:  uint64 order table of the epoch (kernels/permutation.py: order_table):
//            [kind, block rows, full blocks, tail slot, log2 block rows | mask, shift,
//            k0, k1, ... (at FASTGD_PERM_FIRST) | the second bijection | block order,
//            rows' order in a block, tail order (at FASTGD_PERM_ORDERS)];
//            kind 0 in order, 1 a row shuffle, 2 a block shuffle.
// Every sum runs in a fixed order (no atomics): results are bitwise reproducible.
//
// The host passes FASTGD_ROUNDS, FASTGD_PERM_FIRST/ORDERS, FASTGD_MAX_THREADS and the codes of
// fastgd.kernels.codes with -D options (their single source is Python), and prepends
// optim.cuh (the optimizers' update) and reduce.cuh (block reductions, the noise step).
//
// Batch loss: the gradient pass also sums its rows' float64 losses (row_loss, from the
// forward pass, before the update) per block into loss_blocks; thread 0 of the update adds
// the blocks in order, times scale * rows, and the rows to losses[0..2) (add_batch_loss).
//
// Gradient noise (kernels/noise.py), only when asked: grad_norms is grad_step that also sums
// its rows' float64 |g_i|^2 per block (row_sq_norm, from the activations and deltas in
// scratch); a tracked step is grad_norms, opt_update_noise (also the gradient's squares per
// block) and noise_step; exact_noise is grad_norms with the own-loss scale, then grad_sq.

#if !defined(FASTGD_ROUNDS) || !defined(FASTGD_PERM_FIRST) || !defined(FASTGD_PERM_ORDERS) \
    || !defined(FASTGD_MAX_THREADS)
#error "compile with -DFASTGD_ROUNDS=.. -DFASTGD_PERM_FIRST=.. -DFASTGD_PERM_ORDERS=.. ..."
#endif

typedef long long i64;
typedef unsigned long long u64;

// Template ids: the codes of fastgd.kernels.codes, passed as -D options.
enum Loss { LOSS_MSE = FASTGD_LOSS_MSE, LOSS_LOGISTIC = FASTGD_LOSS_LOGISTIC,
            LOSS_SOFTMAX = FASTGD_LOSS_SOFTMAX };
enum Activation { ACT_RELU = FASTGD_ACT_RELU, ACT_TANH = FASTGD_ACT_TANH,
                  ACT_SIGMOID = FASTGD_ACT_SIGMOID };

template <typename A> __device__ inline A fg_min(A a, A b) { return b < a ? b : a; }
template <typename A> __device__ inline A fg_max(A a, A b) { return a < b ? b : a; }

// ---------------------------------------------------------------------------- the shuffle
// The C twin of kernels/permutation.py's `walk` and `sample_at` (host and device, so a host
// program can check it against the NumPy reference without a GPU).
// The bijection stored at perm[at..] applied to x, cycle-walking below `limit`.
__host__ __device__ inline u64 perm_walk(u64 x, const u64* perm, int at, u64 limit) {
    const u64 mask = perm[at], shift = perm[at + 1];
    while (true) {
        for (int r = 0; r < FASTGD_ROUNDS; ++r) {
            x = (x ^ perm[at + 2 + 2 * r]) & mask;
            x = (x * perm[at + 3 + 2 * r]) & mask;
            x = x ^ (x >> shift);
        }
        if (x < limit) return x;
    }
}

// Row visited at position `pos` of an epoch over n rows: in order, a row shuffle (the first
// bijection), or a block shuffle (the block order, the rows' order in a block and the
// tail's order stored after the keys, at FASTGD_PERM_ORDERS).
__host__ __device__ inline i64 sample_at(i64 pos, const u64* perm, i64 n) {
    const u64 kind = perm[0];
    if (kind == 0) return pos;
    u64 x = (u64)pos;
    if (kind == 1) return (i64)perm_walk(x, perm, FASTGD_PERM_FIRST, (u64)n);
    const u64 b = perm[1], full = perm[2], lo = perm[3] * b, tail = (u64)n - full * b;
    const u64* blocks = perm + FASTGD_PERM_ORDERS;
    if (x >= lo && x - lo < tail) return (i64)(full * b + blocks[full + b + x - lo]);
    if (x >= lo) x -= tail;
    const u64 block = blocks[x >> perm[4]];  // x / b
    return (i64)(block * b + blocks[full + ((x + block) & (b - 1))]);
}

// out[i] = sample_at(i) for i < n (tests the device shuffle against NumPy).
extern "C" __global__ void permutation_kernel(const u64* perm, i64 n, i64* out) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = sample_at(i, perm, n);
}

// ---------------------------------------------------------------------------- activations
template <typename T> __device__ inline T sigmoid(T z) {
    if (z >= T(0)) return T(1) / (T(1) + exp(-z));
    const T e = exp(z);
    return e / (T(1) + e);
}

template <typename T, int ACT> __device__ inline T activate(T z) {
    if (ACT == ACT_RELU) return z > T(0) ? z : T(0);
    if (ACT == ACT_TANH) return tanh(z);
    return sigmoid<T>(z);
}

// Derivative in terms of the activation's output a.
template <typename T, int ACT> __device__ inline T activate_grad(T a) {
    if (ACT == ACT_RELU) return a > T(0) ? T(1) : T(0);
    if (ACT == ACT_TANH) return T(1) - a * a;
    return a * (T(1) - a);
}

// ---------------------------------------------------------------------------- losses
// d[0..k) = scale * dLoss/dz of logits z[0..k) for the targets y of one row (for softmax,
// y[0] is the class id).
template <typename T, int LOSS>
__device__ inline void output_grad(const T* z, T* d, i64 k, const T* y, T scale) {
    if (LOSS == LOSS_MSE) {
        for (i64 q = 0; q < k; ++q) d[q] = T(2) * (z[q] - y[q]) * scale;
    } else if (LOSS == LOSS_LOGISTIC) {
        for (i64 q = 0; q < k; ++q) d[q] = (sigmoid<T>(z[q]) - y[q]) * scale;
    } else {
        T zmax = z[0];
        for (i64 q = 1; q < k; ++q) zmax = fg_max(zmax, z[q]);
        T total = T(0);
        for (i64 q = 0; q < k; ++q) {
            d[q] = exp(z[q] - zmax);
            total += d[q];
        }
        const i64 label = (i64)y[0];
        for (i64 q = 0; q < k; ++q) d[q] = (d[q] / total - (q == label ? T(1) : T(0))) * scale;
    }
}

// float64 loss of one row, summed over its k outputs.
template <typename T, int LOSS>
__device__ inline double row_loss(const T* z, i64 k, const T* y) {
    double acc = 0.0;
    if (LOSS == LOSS_MSE) {
        for (i64 q = 0; q < k; ++q) {
            const double v = (double)z[q] - (double)y[q];
            acc += v * v;
        }
    } else if (LOSS == LOSS_LOGISTIC) {
        for (i64 q = 0; q < k; ++q) {
            const double v = (double)z[q];
            acc += fg_max(v, 0.0) - v * (double)y[q] + log1p(exp(-fabs(v)));
        }
    } else {
        double zmax = (double)z[0];
        for (i64 q = 1; q < k; ++q) zmax = fg_max(zmax, (double)z[q]);
        double e = 0.0;
        for (i64 q = 0; q < k; ++q) e += exp((double)z[q] - zmax);
        acc = zmax + log(e) - (double)z[(i64)y[0]];
    }
    return acc;
}

// ---------------------------------------------------------------------------- one row
// Forward pass of scratch row s (s[0..n_in) holds the input): every layer's output.
template <typename T, int ACT>
__device__ inline void forward(const T* theta, const i64* lay, i64 n_layers, T* s) {
    for (i64 l = 0; l < n_layers; ++l) {
        const i64* L = lay + 6 * l;
        const i64 n_in = L[0], n_out = L[1], wo = L[2], bo = L[3], ai = L[4], ao = L[5];
        for (i64 j = 0; j < n_out; ++j) {
            T z = theta[bo + j];
            for (i64 i = 0; i < n_in; ++i) z += s[ai + i] * theta[wo + i * n_out + j];
            s[ao + j] = l < n_layers - 1 ? activate<T, ACT>(z) : z;
        }
    }
}

// Backward pass of scratch row s (the output layer's d already set): d of hidden layers.
template <typename T, int ACT>
__device__ inline void backward(const T* theta, const i64* lay, i64 n_layers, T* s, i64 A) {
    for (i64 l = n_layers - 1; l > 0; --l) {
        const i64* L = lay + 6 * l;
        const i64 n_in = L[0], n_out = L[1], wo = L[2], ai = L[4], d = A + L[5];
        for (i64 i = 0; i < n_in; ++i) {
            T g = s[d] * theta[wo + i * n_out];
            for (i64 j = 1; j < n_out; ++j) g += s[d + j] * theta[wo + i * n_out + j];
            s[A + ai + i] = g * activate_grad<T, ACT>(s[ai + i]);
        }
    }
}

// Gradient of parameter p summed over scratch rows 0..count (row width w) in row order.
template <typename T>
__device__ inline T param_grad(i64 p, const i64* lay, const T* S, i64 w, i64 count, i64 A) {
    i64 l = 0;
    while (p >= lay[6 * l + 3] + lay[6 * l + 1]) ++l;
    const i64* L = lay + 6 * l;
    const i64 n_out = L[1];
    i64 d = A + L[5];
    if (p < L[3]) {  // weight W[i, j] = a_in[i] * d[j]
        const i64 q = p - L[2], i = q / n_out;
        const i64 a = L[4] + i;
        d += q - i * n_out;
        T g = S[a] * S[d];
        for (i64 u = 1; u < count; ++u) g += S[u * w + a] * S[u * w + d];
        return g;
    }
    d += p - L[3];  // bias b[j] = d[j]
    T g = S[d];
    for (i64 u = 1; u < count; ++u) g += S[u * w + d];
    return g;
}

// float64 |g|^2 of scratch row s after its backward pass: sum over layers of
// (|a_in|^2 + 1) |d|^2 (a_in at s[a_in..], the layer's delta at s[A + a_out..]), in order.
template <typename T>
__device__ inline double row_sq_norm(const T* s, const i64* lay, i64 n_layers, i64 A) {
    double total = 0.0;
    for (i64 l = 0; l < n_layers; ++l) {
        const i64* L = lay + 6 * l;
        double a2 = 0.0, d2 = 0.0;
        for (i64 i = 0; i < L[0]; ++i) a2 += (double)s[L[4] + i] * (double)s[L[4] + i];
        for (i64 j = 0; j < L[1]; ++j) d2 += (double)s[A + L[5] + j] * (double)s[A + L[5] + j];
        total += (a2 + 1.0) * d2;
    }
    return total;
}

// ---------------------------------------------------------------------------- kernels
// The gradient pass of one step over positions start .. start+rows (launch with at most
// ceil(rows / blockDim) blocks, so every block writes its row of `partial`). Block b takes
// chunks b, b + gridDim, ... of blockDim positions; per chunk each thread runs
// forward/backward of one row in its scratch row, then the block's threads split the
// parameters and sum a_in * d over the chunk's rows in row order into partial[b, p].
// Returns the thread's float64 sum of row_loss over its rows, and adds to `norms` their
// row_sq_norm when NORMS (else nothing of it is compiled).
template <typename T, int LOSS, int ACT, bool NORMS>
__device__ inline double grad_pass(const T* X, const T* Y, const T* theta, const u64* perm,
                                   const i64* lay, i64 n_layers, T* S, T* partial, i64 n,
                                   i64 n_feat, i64 y_width, i64 n_params, i64 A, i64 start,
                                   i64 rows, T scale, double& norms) {
    const i64 t = threadIdx.x, b = blockIdx.x, threads = blockDim.x, blocks = gridDim.x;
    const i64* last = lay + 6 * (n_layers - 1);
    const i64 w = 2 * A;
    T* block_rows = S + b * threads * w;
    T* s = block_rows + t * w;
    double loss = 0.0;
    for (i64 c = b; c < (rows + threads - 1) / threads; c += blocks) {
        const i64 first = start + c * threads;
        const i64 count = fg_min(threads, start + rows - first);
        if (t < count) {
            const i64 r = sample_at(first + t, perm, n);
            for (i64 i = 0; i < n_feat; ++i) s[i] = X[r * n_feat + i];
            forward<T, ACT>(theta, lay, n_layers, s);
            // before output_grad, which writes the deltas' half (the logits stay)
            loss += row_loss<T, LOSS>(s + last[5], last[1], Y + r * y_width);
            output_grad<T, LOSS>(s + last[5], s + A + last[5], last[1], Y + r * y_width, scale);
            backward<T, ACT>(theta, lay, n_layers, s, A);
            if (NORMS) norms += row_sq_norm<T>(s, lay, n_layers, A);
        }
        __syncthreads();
        for (i64 p = t; p < n_params; p += threads) {
            const T g = param_grad<T>(p, lay, block_rows, w, count, A);
            partial[b * n_params + p] = c == b ? g : partial[b * n_params + p] + g;
        }
        __syncthreads();
    }
    return loss;
}

// Per-block gradient sums of one step (grad_pass), and loss_blocks[b] = float64 loss of
// block b's rows (summed over rows and outputs, at the parameters before the update).
template <typename T, int LOSS, int ACT>
__global__ void grad_step(const T* X, const T* Y, const T* theta, const u64* perm,
                          const i64* lay, i64 n_layers, T* S, T* partial, i64 n, i64 n_feat,
                          i64 y_width, i64 n_params, i64 A, i64 start, i64 rows, T scale,
                          double* loss_blocks) {
    double unused = 0.0;
    const double loss = grad_pass<T, LOSS, ACT, false>(X, Y, theta, perm, lay, n_layers, S,
                                                       partial, n, n_feat, y_width, n_params,
                                                       A, start, rows, scale, unused);
    block_sum(loss, loss_blocks, blockIdx.x);
}

// grad_step, and out[b] = sum over block b's rows of their |g_i|^2 times ratio2 ((own
// scale / scale)^2: rows^2 for a batch's deltas, 1 when scale is the own-loss scale).
template <typename T, int LOSS, int ACT>
__global__ void grad_norms(const T* X, const T* Y, const T* theta, const u64* perm,
                           const i64* lay, i64 n_layers, T* S, T* partial, i64 n, i64 n_feat,
                           i64 y_width, i64 n_params, i64 A, i64 start, i64 rows, T scale,
                           double* loss_blocks, double ratio2, double* out) {
    double norms = 0.0;
    const double loss = grad_pass<T, LOSS, ACT, true>(X, Y, theta, perm, lay, n_layers, S,
                                                      partial, n, n_feat, y_width, n_params,
                                                      A, start, rows, scale, norms);
    block_sum(loss, loss_blocks, blockIdx.x);
    block_sum(norms * ratio2, out, blockIdx.x);
}

// Sum partial[0..n_blocks, p] in block order, then step t (1-based) of optimizer `code`
// (optim.cuh) with learning rate lrs[step] and hyper-parameters h; one thread per parameter.
// `state` is (n_state, n_params) row-major. Thread 0 adds the step's batch loss to losses
// (add_batch_loss of the gradient launch's n_blocks sums, weight = scale * rows).
template <typename T>
__global__ void opt_update(T* theta, T* state, const T* partial, i64 n_blocks, i64 n_params,
                           const double* h, const double* lrs, int code, i64 step, i64 t,
                           const double* loss_blocks, double weight, double rows,
                           double* losses) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p == 0) add_batch_loss(loss_blocks, n_blocks, weight, rows, losses);
    if (p >= n_params) return;
    const T g = block_grad<T>(partial, n_blocks, n_params, p);
    T s[FASTGD_SCALAR_SLOTS];
    step_scalars<T>(code, h, lrs[step], t, s);
    update_element<T>(code, theta, state, n_params, p, g, s);
}

// opt_update, and gsq[b] = sum of g_p^2 over block b's parameters (a tracked step's
// |G_B|^2 per block; every thread reaches the block's reduction).
template <typename T>
__global__ void opt_update_noise(T* theta, T* state, const T* partial, i64 n_blocks,
                                 i64 n_params, const double* h, const double* lrs, int code,
                                 i64 step, i64 t, const double* loss_blocks, double weight,
                                 double rows, double* losses, double* gsq) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p == 0) add_batch_loss(loss_blocks, n_blocks, weight, rows, losses);
    double acc = 0.0;
    if (p < n_params) {
        const T g = block_grad<T>(partial, n_blocks, n_params, p);
        T s[FASTGD_SCALAR_SLOTS];
        step_scalars<T>(code, h, lrs[step], t, s);
        update_element<T>(code, theta, state, n_params, p, g, s);
        acc = (double)g * (double)g;
    }
    block_sum(acc, gsq, blockIdx.x);
}

// out[b]: float64 loss of block b's rows of X (summed over rows and outputs); blockDim a
// power of two <= FASTGD_MAX_THREADS, a shared-memory tree per block (reduce.cuh), the
// host sums out[] in block order.
template <typename T, int LOSS, int ACT>
__global__ void loss_sum(const T* X, const T* Y, const T* theta, const i64* lay, i64 n_layers,
                         T* S, double* out, i64 n, i64 n_feat, i64 y_width, i64 A) {
    const i64 t = threadIdx.x, b = blockIdx.x, threads = blockDim.x, blocks = gridDim.x;
    const i64* last = lay + 6 * (n_layers - 1);
    T* s = S + (b * threads + t) * 2 * A;
    double acc = 0.0;
    for (i64 c = b; c < (n + threads - 1) / threads; c += blocks) {
        const i64 r = c * threads + t;
        if (r < n) {
            for (i64 i = 0; i < n_feat; ++i) s[i] = X[r * n_feat + i];
            forward<T, ACT>(theta, lay, n_layers, s);
            acc += row_loss<T, LOSS>(s + last[5], last[1], Y + r * y_width);
        }
    }
    block_sum(acc, out, b);
}
