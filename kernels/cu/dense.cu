// fastgd CuPy backend: dense-network kernels (a linear model is the network with one layer).
//
// One source, compiled by NVRTC through cupy.RawModule (fastgd.kernels.cupy_module). The
// dtype T (float/double), the loss and the activation are template parameters, selected
// per module with name_expressions such as "step<float, 2, 0>"; layer sizes are runtime
// data (the int64 `lay` table), so one module serves every network shape.
//
// The design, the math and the memory layouts are those of kernels/cuda/dense.py (the
// Numba-CUDA kernels), read that docstring first:
//   * theta: flat parameters W1, b1, W2, b2, ... with W (n_in, n_out) row-major;
//   * lay:   int64 (L, 6) rows  n_in, n_out, w_off, b_off, a_in, a_out;
//   * a step is one launch: block b takes tiles b, b + gridDim, ... of `tile` rows
//     (kernels/device_tables.py: launch_shape); the block's threads share a tile, its rows
//     in dynamic shared memory (and, when they fit, the parameters after it: weights()),
//     row u at S[u * W ..] with W = 2A: [a_0 | a_1 | ... | z_L]
//     then [unused | d_1 | ... | d_L], d_l = dLoss/dz_l of the row; per-block gradient sums
//     go to partial[b]; the last block to finish (last_block, a counter) sums them in block
//     order and applies the fused update (optim.cuh); when that sum would be long
//     (device_tables.fused_step), a step is grad_blocks then update_params instead, the
//     same sums in the same order;
//   * perm:  uint64 order table of the epoch (kernels/permutation.py: order_table):
//            [kind, block rows, full blocks, tail slot, log2 block rows | mask, shift,
//            k0, k1, ... (at FASTGD_PERM_FIRST) | the second bijection | block order,
//            rows' order in a block, tail order (at FASTGD_PERM_ORDERS)];
//            kind 0 in order, 1 a row shuffle, 2 a block shuffle.
// Every sum runs in a fixed order (the one atomic counts finished blocks): results are
// bitwise reproducible. The step count t is t0[0] + s + 1 and the rate lrs[s], read from
// device memory, so an epoch's launches are the same every epoch: the backend captures
// them once in a CUDA graph and replays it.
//
// The host passes FASTGD_ROUNDS, FASTGD_PERM_FIRST/ORDERS, FASTGD_MAX_THREADS,
// FASTGD_TILE_MAX and the codes of fastgd.kernels.codes with -D options (their single
// source is Python), and prepends optim.cuh (the optimizers' update) and reduce.cuh (block
// reductions, the noise step).
//
// float kernels compute in float: every constant is T(...); the row losses are computed in
// T and accumulated in double, as are the per-example norms (noise tracking) and the
// optimizer's per-step scalars (rounded to T once per thread).

#if !defined(FASTGD_ROUNDS) || !defined(FASTGD_PERM_FIRST) || !defined(FASTGD_PERM_ORDERS) \
    || !defined(FASTGD_MAX_THREADS) || !defined(FASTGD_TILE_MAX)
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

// Loss of one row, summed over its k outputs, in T (the caller accumulates in double).
template <typename T, int LOSS>
__device__ inline T row_loss(const T* z, i64 k, const T* y) {
    T acc = T(0);
    if (LOSS == LOSS_MSE) {
        for (i64 q = 0; q < k; ++q) {
            const T v = z[q] - y[q];
            acc += v * v;
        }
    } else if (LOSS == LOSS_LOGISTIC) {
        for (i64 q = 0; q < k; ++q) {
            const T v = z[q];
            acc += fg_max(v, T(0)) - v * y[q] + log1p(exp(-fabs(v)));
        }
    } else {
        T zmax = z[0];
        for (i64 q = 1; q < k; ++q) zmax = fg_max(zmax, z[q]);
        T e = T(0);
        for (i64 q = 0; q < k; ++q) e += exp(z[q] - zmax);
        acc = zmax + log(e) - z[(i64)y[0]];
    }
    return acc;
}

// ---------------------------------------------------------------------------- a tile
// The block's dynamic shared memory (the launch sets its size): a tile of rows.
extern __shared__ __align__(16) unsigned char fg_shared[];

// Every layer's outputs for the tile's `count` rows (row u at S[u * W]; theta: the
// parameters, in shared or global memory): the block's threads take the (row, output)
// pairs in row-major order, so a warp reads consecutive columns of W (coalesced) and
// broadcasts one row's activations from shared memory.
template <typename T, int ACT>
__device__ inline void forward(const T* theta, const i64* lay, i64 n_layers, T* S, i64 W,
                               i64 count) {
    for (i64 l = 0; l < n_layers; ++l) {
        const i64* L = lay + 6 * l;
        const i64 n_in = L[0], n_out = L[1], wo = L[2], bo = L[3], ai = L[4], ao = L[5];
        for (i64 idx = threadIdx.x; idx < count * n_out; idx += blockDim.x) {
            const i64 u = idx / n_out, j = idx - u * n_out;
            const T* a = S + u * W + ai;
            T z = theta[bo + j];
            for (i64 i = 0; i < n_in; ++i) z += a[i] * theta[wo + i * n_out + j];
            S[u * W + ao + j] = l < n_layers - 1 ? activate<T, ACT>(z) : z;
        }
        __syncthreads();
    }
}

// The hidden layers' deltas of the tile's rows (the output layer's already set), the
// (row, input) pairs split over the block's threads.
template <typename T, int ACT>
__device__ inline void backward(const T* theta, const i64* lay, i64 n_layers, T* S, i64 W,
                                i64 A, i64 count) {
    for (i64 l = n_layers - 1; l > 0; --l) {
        const i64* L = lay + 6 * l;
        const i64 n_in = L[0], n_out = L[1], wo = L[2], ai = L[4], d = A + L[5];
        for (i64 idx = threadIdx.x; idx < count * n_in; idx += blockDim.x) {
            const i64 u = idx / n_in, i = idx - u * n_in;
            const T* delta = S + u * W + d;
            T g = delta[0] * theta[wo + i * n_out];
            for (i64 j = 1; j < n_out; ++j) g += delta[j] * theta[wo + i * n_out + j];
            S[u * W + A + ai + i] = g * activate_grad<T, ACT>(S[u * W + ai + i]);
        }
        __syncthreads();
    }
}

// Where the tile passes read the parameters: with wsh, a copy in shared memory after the
// tile (at S + wb, made here once per block), else theta in global memory.
template <typename T>
__device__ inline const T* weights(const T* theta, i64 n_params, T* S, i64 wb, i64 wsh) {
    if (!wsh) return theta;
    for (i64 i = threadIdx.x; i < n_params; i += blockDim.x) S[wb + i] = theta[i];
    __syncthreads();
    return S + wb;
}

// The tile's sample ids (the epoch's order) into rid, then their input rows into the tile,
// consecutive threads reading consecutive features (coalesced).
template <typename T>
__device__ inline void load_tile(const T* X, const u64* perm, i64 n, i64 n_feat, i64* rid,
                                 T* S, i64 W, i64 first, i64 count) {
    for (i64 u = threadIdx.x; u < count; u += blockDim.x) rid[u] = sample_at(first + u, perm, n);
    __syncthreads();
    for (i64 idx = threadIdx.x; idx < count * n_feat; idx += blockDim.x) {
        const i64 u = idx / n_feat, i = idx - u * n_feat;
        S[u * W + i] = X[rid[u] * n_feat + i];
    }
    __syncthreads();
}

// Gradient of parameter p summed over the tile's rows 0 .. count in order.
template <typename T>
__device__ inline T param_grad(i64 p, const i64* lay, const T* S, i64 W, i64 count, i64 A) {
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
        for (i64 u = 1; u < count; ++u) g += S[u * W + a] * S[u * W + d];
        return g;
    }
    d += p - L[3];  // bias b[j] = d[j]
    T g = S[d];
    for (i64 u = 1; u < count; ++u) g += S[u * W + d];
    return g;
}

// double |g|^2 of the tile row at s after its backward pass: sum over layers of
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
// The gradient pass of a step over positions start .. start+rows in tiles of `tile` rows:
// block b takes tiles b, b + gridDim, ...; per tile its threads load the rows, run the
// forward pass, the rows' losses and output deltas (a thread per row), the backward pass,
// then split the parameters and add the tile's a_in * d (rows in order) to partial[b, p].
// Returns the thread's double sum of its rows' losses, and adds their row_sq_norm to
// `norms` when NORMS (else nothing of it is compiled).
template <typename T, int LOSS, int ACT, bool NORMS>
__device__ inline double grad_pass(const T* X, const T* Y, const T* theta, const u64* perm,
                                   const i64* lay, i64 n_layers, T* partial, i64 n,
                                   i64 n_feat, i64 y_width, i64 n_params, i64 start,
                                   i64 rows, T scale, i64 tile, i64 wsh, double& norms) {
    __shared__ i64 rid[FASTGD_TILE_MAX];
    T* S = reinterpret_cast<T*>(fg_shared);
    const i64 t = threadIdx.x, b = blockIdx.x, threads = blockDim.x, blocks = gridDim.x;
    const i64* last = lay + 6 * (n_layers - 1);
    const i64 A = last[5] + last[1], W = 2 * A, k = last[1];
    const T* w = weights<T>(theta, n_params, S, tile * W, wsh);
    double loss = 0.0;
    for (i64 c = b; c < (rows + tile - 1) / tile; c += blocks) {
        const i64 first = start + c * tile;
        const i64 count = fg_min(tile, start + rows - first);
        load_tile<T>(X, perm, n, n_feat, rid, S, W, first, count);
        forward<T, ACT>(w, lay, n_layers, S, W, count);
        for (i64 u = t; u < count; u += threads) {
            T* z = S + u * W + last[5];
            const T* y = Y + rid[u] * y_width;
            // before output_grad, which writes the deltas' half (the logits stay)
            loss += (double)row_loss<T, LOSS>(z, k, y);
            output_grad<T, LOSS>(z, z + A, k, y, scale);
        }
        __syncthreads();
        backward<T, ACT>(w, lay, n_layers, S, W, A, count);
        if (NORMS)
            for (i64 u = t; u < count; u += threads) norms += row_sq_norm<T>(S + u * W, lay, n_layers, A);
        for (i64 p = t; p < n_params; p += threads) {
            const T g = param_grad<T>(p, lay, S, W, count, A);
            partial[b * n_params + p] = c == b ? g : partial[b * n_params + p] + g;
        }
        __syncthreads();
    }
    return loss;
}

// The fused update by the step's last block: every parameter's gradient (the blocks' sums
// in block order) and optimizer `code`'s step t0[0] + s + 1 at rate lrs[s]; thread 0 adds
// the batch loss. Returns the thread's double sum of its parameters' squared gradients.
template <typename T>
__device__ inline double finish_step(T* theta, T* state, const T* partial, i64 n_params,
                                     const double* h, const double* lrs, int code,
                                     const i64* t0, i64 s, const double* loss_blocks,
                                     double weight, double rows, double* losses) {
    const i64 blocks = gridDim.x;
    T c[FASTGD_SCALAR_SLOTS];
    step_scalars<T>(code, h, lrs[s], t0[0] + s + 1, c);
    double gsq = 0.0;
    for (i64 p = threadIdx.x; p < n_params; p += blockDim.x) {
        const T g = block_grad<T>(partial, blocks, n_params, p);
        update_element<T>(code, theta, state, n_params, p, g, c);
        gsq += (double)g * (double)g;
    }
    if (threadIdx.x == 0) add_batch_loss(loss_blocks, blocks, weight, rows, losses);
    return gsq;
}

// Step s of an epoch over positions start .. start+rows in one launch (grad_pass, then the
// last block's finish_step); launch with at most ceil(rows / tile) blocks and tile * 2A * T
// bytes of dynamic shared memory.
template <typename T, int LOSS, int ACT>
__global__ void step(const T* X, const T* Y, T* theta, T* state, const u64* perm,
                     const i64* lay, i64 n_layers, T* partial, double* loss_blocks,
                     unsigned* counter, const double* h, const double* lrs, const i64* t0,
                     int code, i64 s, i64 n, i64 n_feat, i64 y_width, i64 n_params,
                     i64 start, i64 rows, T scale, i64 tile, i64 wsh, double* losses) {
    double unused = 0.0;
    const double loss = grad_pass<T, LOSS, ACT, false>(X, Y, theta, perm, lay, n_layers,
                                                       partial, n, n_feat, y_width, n_params,
                                                       start, rows, scale, tile, wsh, unused);
    block_sum(loss, loss_blocks, blockIdx.x);
    if (last_block(counter))
        finish_step<T>(theta, state, partial, n_params, h, lrs, code, t0, s, loss_blocks,
                       (double)scale * (double)rows, (double)rows, losses);
}

// step's gradient pass alone (the first of a step's two launches): partial[b] and
// loss_blocks[b], the blocks' sums.
template <typename T, int LOSS, int ACT>
__global__ void grad_blocks(const T* X, const T* Y, const T* theta, const u64* perm,
                            const i64* lay, i64 n_layers, T* partial, double* loss_blocks,
                            i64 n, i64 n_feat, i64 y_width, i64 n_params, i64 start, i64 rows,
                            T scale, i64 tile, i64 wsh) {
    double unused = 0.0;
    const double loss = grad_pass<T, LOSS, ACT, false>(X, Y, theta, perm, lay, n_layers,
                                                       partial, n, n_feat, y_width, n_params,
                                                       start, rows, scale, tile, wsh, unused);
    block_sum(loss, loss_blocks, blockIdx.x);
}

// step's last block as a launch of its own, one thread per parameter (the second of a
// step's two launches): the same sums in the same order, the same bits, with every SM
// reducing the n_blocks partial gradients instead of one (weight: the fused step's
// (double)scale * rows).
template <typename T>
__global__ void update_params(T* theta, T* state, const T* partial, i64 n_blocks,
                              i64 n_params, const double* loss_blocks, const double* h,
                              const double* lrs, const i64* t0, int code, i64 s,
                              double weight, i64 rows, double* losses) {
    const i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p == 0) add_batch_loss(loss_blocks, n_blocks, weight, (double)rows, losses);
    if (p >= n_params) return;
    T c[FASTGD_SCALAR_SLOTS];
    step_scalars<T>(code, h, lrs[s], t0[0] + s + 1, c);
    const T g = block_grad<T>(partial, n_blocks, n_params, p);
    update_element<T>(code, theta, state, n_params, p, g, c);
}

// step, tracking gradient noise: the blocks also sum their rows' |g_i|^2 (times rows^2:
// the deltas carry the batch scale 1/rows of the own-loss scale) into sq_blocks, and the
// last block adds the step's estimates to noise[0..3) (n: the training rows).
template <typename T, int LOSS, int ACT>
__global__ void step_noise(const T* X, const T* Y, T* theta, T* state, const u64* perm,
                           const i64* lay, i64 n_layers, T* partial, double* loss_blocks,
                           unsigned* counter, const double* h, const double* lrs,
                           const i64* t0, int code, i64 s, i64 n, i64 n_feat, i64 y_width,
                           i64 n_params, i64 start, i64 rows, T scale, i64 tile, i64 wsh,
                           double* losses, double* sq_blocks, double* noise) {
    double norms = 0.0;
    const double loss = grad_pass<T, LOSS, ACT, true>(X, Y, theta, perm, lay, n_layers,
                                                      partial, n, n_feat, y_width, n_params,
                                                      start, rows, scale, tile, wsh, norms);
    block_sum(loss, loss_blocks, blockIdx.x);
    block_sum(norms * (double)rows * (double)rows, sq_blocks, blockIdx.x);
    if (last_block(counter)) {
        const double gsq = tree_sum(finish_step<T>(theta, state, partial, n_params, h, lrs,
                                                   code, t0, s, loss_blocks,
                                                   (double)scale * (double)rows,
                                                   (double)rows, losses));
        if (threadIdx.x == 0) add_noise_step(sq_blocks, gridDim.x, gsq, rows, n, noise);
    }
}

// The gradient pass alone (exact_noise, with the own-loss scale): partial[b] the block's
// gradient sums, loss_blocks[b] its rows' losses, out[b] their double |g_i|^2.
template <typename T, int LOSS, int ACT>
__global__ void grad_norms(const T* X, const T* Y, const T* theta, const u64* perm,
                           const i64* lay, i64 n_layers, T* partial, i64 n, i64 n_feat,
                           i64 y_width, i64 n_params, i64 start, i64 rows, T scale, i64 tile,
                           i64 wsh, double* loss_blocks, double* out) {
    double norms = 0.0;
    const double loss = grad_pass<T, LOSS, ACT, true>(X, Y, theta, perm, lay, n_layers,
                                                      partial, n, n_feat, y_width, n_params,
                                                      start, rows, scale, tile, wsh, norms);
    block_sum(loss, loss_blocks, blockIdx.x);
    block_sum(norms, out, blockIdx.x);
}

// out[b]: double loss of block b's tiles of X (positions in the order of perm, the
// identity here), summed over rows and outputs; the host sums out[] in block order.
template <typename T, int LOSS, int ACT>
__global__ void loss_sum(const T* X, const T* Y, const T* theta, const u64* perm,
                         const i64* lay, i64 n_layers, i64 n, i64 n_feat, i64 y_width,
                         i64 tile, i64 wsh, double* out) {
    __shared__ i64 rid[FASTGD_TILE_MAX];
    T* S = reinterpret_cast<T*>(fg_shared);
    const i64* last = lay + 6 * (n_layers - 1);
    const i64 W = 2 * (last[5] + last[1]);
    const T* w = weights<T>(theta, last[3] + last[1], S, tile * W, wsh);
    double acc = 0.0;
    for (i64 c = blockIdx.x; c < (n + tile - 1) / tile; c += gridDim.x) {
        const i64 count = fg_min(tile, n - c * tile);
        load_tile<T>(X, perm, n, n_feat, rid, S, W, c * tile, count);
        forward<T, ACT>(w, lay, n_layers, S, W, count);
        for (i64 u = threadIdx.x; u < count; u += blockDim.x)
            acc += (double)row_loss<T, LOSS>(S + u * W + last[5], last[1], Y + rid[u] * y_width);
        __syncthreads();
    }
    block_sum(acc, out, blockIdx.x);
}
