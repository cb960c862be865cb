// fastgd optimizers in CUDA C: the rules of kernels/optimizers.py (torch.optim's order of
// operations), written like kernels/numba_optim.py, its Numba twin: per-step scalars in
// double from the hyper vector h (slots: kernels/optimizers.py), the step's lr and the
// 1-based step t, rounded once to T; then one parameter's update in T.
//
// Codes and slot counts come from -D options (fastgd.kernels.codes.cuda_defines), never
// from literals here. To add an optimizer: a branch in each function below.

#if !defined(FASTGD_OPT_SGD) || !defined(FASTGD_OPT_ADAM) || !defined(FASTGD_OPT_RMSPROP) || \
    !defined(FASTGD_OPT_ADAGRAD) || !defined(FASTGD_SCALAR_SLOTS)
#error "compile with the -D options of fastgd.kernels.codes.cuda_defines()"
#endif

// The step's scalars s[0 .. FASTGD_SCALAR_SLOTS) of optimizer `code`, in T.
template <typename T>
__device__ inline void step_scalars(int code, const double* h, double lr, long long t, T* s) {
    double d[FASTGD_SCALAR_SLOTS] = {0};
    const double tt = (double)t;
    if (code == FASTGD_OPT_ADAM) {
        const double beta1 = h[0], beta2 = h[1], eps = h[2], wd = h[3], amsgrad = h[4];
        const bool decoupled = h[5] != 0.0;
        const double w = 1.0 - beta1;
        d[0] = decoupled ? 1.0 - lr * wd : 1.0;   // AdamW's decay factor
        d[1] = w;
        d[2] = beta2;
        d[3] = 1.0 - beta2;
        d[4] = eps;
        d[5] = decoupled ? 0.0 : wd;              // L2 added to the gradient (Adam)
        d[6] = lr / (1.0 - pow(beta1, tt));       // step size
        d[7] = sqrt(1.0 - pow(beta2, tt));        // sqrt of the second bias correction
        d[8] = amsgrad;
        d[9] = w < 0.5 ? 1.0 : 0.0;               // which side of torch.lerp
        d[10] = 1.0 - w;
    } else if (code == FASTGD_OPT_RMSPROP) {
        const double w = 1.0 - h[0];
        d[0] = lr; d[1] = h[0]; d[2] = w; d[3] = h[1]; d[4] = h[2]; d[5] = h[3]; d[6] = h[4];
        d[7] = w < 0.5 ? 1.0 : 0.0;
        d[8] = 1.0 - w;
    } else if (code == FASTGD_OPT_ADAGRAD) {
        d[0] = lr / (1.0 + (tt - 1.0) * h[0]);   // Adagrad's decayed rate
        d[1] = h[1];
        d[2] = h[2];
    } else {  // SGD
        d[0] = lr; d[1] = h[0]; d[2] = 1.0 - h[1]; d[3] = h[2]; d[4] = h[3];
        d[5] = t > 1 ? 1.0 : 0.0;                 // the momentum buffer exists
    }
    for (int i = 0; i < FASTGD_SCALAR_SLOTS; ++i) s[i] = (T)d[i];
}

// torch.lerp(a, b, w) with wc = 1 - w, low = (w < 0.5): PyTorch's two-sided formula.
template <typename T> __device__ inline T fg_lerp(T a, T b, T w, T wc, T low) {
    return low != T(0) ? a + w * (b - a) : b - (b - a) * wc;
}

// Update parameter p (state rows state[j * n + p], j < n_state) with gradient g.
template <typename T>
__device__ inline void update_element(int code, T* theta, T* state, long long n, long long p,
                                      T g, const T* s) {
    if (code == FASTGD_OPT_ADAM) {
        const T q = theta[p] * s[0];
        g = g + s[5] * q;
        const T m = fg_lerp(state[p], g, s[1], s[10], s[9]);
        T v = state[n + p] * s[2] + s[3] * g * g;
        state[p] = m;
        state[n + p] = v;
        if (s[8] != T(0)) {
            v = state[2 * n + p] < v ? v : state[2 * n + p];
            state[2 * n + p] = v;
        }
        theta[p] = q - s[6] * (m / (sqrt(v) / s[7] + s[4]));
    } else if (code == FASTGD_OPT_RMSPROP) {
        const T q = theta[p];
        g = g + s[4] * q;
        const T sq = state[p] * s[1] + s[2] * g * g;
        state[p] = sq;
        T avg;
        if (s[6] != T(0)) {
            const T ga = fg_lerp(state[n + p], g, s[2], s[8], s[7]);
            state[n + p] = ga;
            avg = sqrt(sq - ga * ga) + s[3];
        } else {
            avg = sqrt(sq) + s[3];
        }
        if (s[5] > T(0)) {
            const long long j = s[6] != T(0) ? 2 : 1;
            const T buf = state[j * n + p] * s[5] + g / avg;
            state[j * n + p] = buf;
            theta[p] = q - s[0] * buf;
        } else {
            theta[p] = q - s[0] * (g / avg);
        }
    } else if (code == FASTGD_OPT_ADAGRAD) {
        const T q = theta[p];
        g = g + s[1] * q;
        const T total = state[p] + g * g;
        state[p] = total;
        theta[p] = q - s[0] * (g / (sqrt(total) + s[2]));
    } else {  // SGD
        const T q = theta[p];
        g = g + s[4] * q;
        if (s[1] != T(0)) {
            const T buf = s[5] != T(0) ? s[1] * state[p] + s[2] * g : g;
            state[p] = buf;
            g = s[3] != T(0) ? g + s[1] * buf : buf;
        }
        theta[p] = q - s[0] * g;
    }
}
