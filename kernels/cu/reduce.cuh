// fastgd CuPy backend: fixed-order block reductions, the batch-loss sums and the
// gradient-noise step, the CUDA C twin of kernels/cuda/reduce.py (read its docstring). Compiled between optim.cuh and
// dense.cu (fastgd.kernels.cupy_module.SOURCES).
//
// Every sum runs in an order fixed by the launch shape (no atomics): bitwise reproducible.
// The noise definitions are kernels/noise.py's.

#if !defined(FASTGD_MAX_THREADS)
#error "compile with -DFASTGD_MAX_THREADS=.."
#endif

// Sum of every thread's `acc` over the block (blockDim a power of two <= FASTGD_MAX_THREADS),
// returned to every thread: a shared-memory tree where thread t adds t + half for half =
// blockDim/2, blockDim/4, ... 1. Every thread of the block must call it.
__device__ inline double tree_sum(double acc) {
    __shared__ double shared[FASTGD_MAX_THREADS];
    const unsigned t = threadIdx.x;
    shared[t] = acc;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) shared[t] += shared[t + half];
        __syncthreads();
    }
    const double total = shared[0];
    __syncthreads();  // every thread has read it: the shared array may be reused
    return total;
}

// out[index] = tree_sum(acc), written by thread 0.
__device__ inline void block_sum(double acc, double* out, long long index) {
    const double total = tree_sum(acc);
    if (threadIdx.x == 0) out[index] = total;
}

// True in the block that finishes a launch last (in every thread of it): each block makes
// its writes visible device-wide, then counts itself in *counter; the block that sees the
// count reach gridDim - 1 resets it for the next launch. Every thread must call it. The
// other blocks' results are then read with __ldcg (from L2, not this SM's L1).
__device__ inline bool last_block(unsigned* counter) {
    __shared__ int flag;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) flag = atomicAdd(counter, 1u) == gridDim.x - 1;
    __syncthreads();
    const bool last = flag != 0;
    if (last) {
        __threadfence();
        if (threadIdx.x == 0) *counter = 0;
    }
    return last;
}

// losses += (weight * sum of loss_blocks[0..n_blocks), rows), the blocks in order (one
// thread): loss_blocks are a step's per-block sums of its rows' losses (over the outputs
// too) and weight its mean-reduction scale times rows, so losses[0] gains the mean batch
// loss times the rows (the step's last block calls it: no launch of its own).
__device__ inline void add_batch_loss(const double* loss_blocks, long long n_blocks,
                                      double weight, double rows, double* losses) {
    double total = __ldcg(loss_blocks);
    for (long long b = 1; b < n_blocks; ++b) total += __ldcg(loss_blocks + b);
    losses[0] += total * weight;
    losses[1] += rows;
}

// kernels/noise.py's step_estimates: unbiased (tr(Sigma), |G|^2) from one batch of b >= 2 of
// n rows drawn without replacement, mean_sq = S_B, grad_sq = |G_B|^2.
__device__ inline void step_estimates(double mean_sq, double grad_sq, long long b, long long n,
                                      double* trace, double* grad_sq_est) {
    const double c = (double)(n - b) / ((double)b * ((double)n - 1.0));
    *trace = (mean_sq - grad_sq) / (1.0 - c);
    *grad_sq_est = mean_sq - *trace;
}

// Gradient of parameter p: partial[0..n_blocks, p] ((n_blocks, n_params) row-major) summed
// in block order in T (what the update applies).
template <typename T>
__device__ inline T block_grad(const T* partial, long long n_blocks, long long n_params,
                               long long p) {
    T g = __ldcg(partial + p);
    for (long long b = 1; b < n_blocks; ++b) g += __ldcg(partial + b * n_params + p);
    return g;
}

// out[b]: sum of g_p^2 over block b's parameters p = b * blockDim + t (one thread each).
template <typename T>
__global__ void grad_sq(const T* partial, long long n_blocks, long long n_params, double* out) {
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    double acc = 0.0;
    if (p < n_params) {
        const double g = (double)block_grad<T>(partial, n_blocks, n_params, p);
        acc = g * g;
    }
    block_sum(acc, out, blockIdx.x);
}

// Finish a tracked step of `rows` of n training rows (one thread of its last block):
// S_B = sum of sq_blocks[0..n_sq) in order / rows (the rows' own-loss |g_i|^2), |G_B|^2 =
// gsq (the batch gradient's squares); adds (tr(Sigma), |G|^2, 1) to noise[0..3).
__device__ inline void add_noise_step(const double* sq_blocks, long long n_sq, double gsq,
                                      long long rows, long long n, double* noise) {
    double sq = __ldcg(sq_blocks);
    for (long long b = 1; b < n_sq; ++b) sq += __ldcg(sq_blocks + b);
    double trace, grad_sq_est;
    step_estimates(sq / (double)rows, gsq, rows, n, &trace, &grad_sq_est);
    noise[0] += trace;
    noise[1] += grad_sq_est;
    noise[2] += 1.0;
}
