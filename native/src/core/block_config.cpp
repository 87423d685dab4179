#include "block_config.h"

#include <cmath>
#include <cstring>

#include "error.h"

namespace hspmn {
namespace {

const char* const kNames[P_COUNT] = {
    "router.w", "router.b", "router.log_temp",
    "reflex.norm", "reflex.conv", "reflex.gate", "reflex.up", "reflex.down",
    "attn.norm", "attn.q", "attn.k", "attn.v", "attn.o",
};

// Caps keep every derived element count far inside int64 and every per-row size inside int32.
constexpr int32_t kMaxDim = 1 << 16;
constexpr int32_t kMaxRatio = 64;
constexpr int32_t kMaxConv = 1024;

}  // namespace

hspmn_block_params default_block_params() {
    hspmn_block_params p{};
    p.dim = 2048;
    p.num_heads = 16;
    p.num_kv_heads = 4;
    p.mlp_ratio = 4;
    p.conv_kernel = 3;
    p.routing = HSPMN_ROUTING_TOPK;
    p.rope_base = 10000.0f;
    p.sparsity_k = 0.2f;
    p.router_sparsity_coef = 0.1f;
    p.router_entropy_coef = 0.01f;
    p.norm_eps = 1e-6f;
    return p;
}

void validate_block_params(const hspmn_block_params& p) {
    const hspmn_status E = HSPMN_ERR_INVALID_ARGUMENT;
    if (p.dim <= 0 || p.dim > kMaxDim) fail(E, "dim (%d) must be in [1, %d]", p.dim, kMaxDim);
    if (p.num_heads <= 0) fail(E, "num_heads (%d) must be positive", p.num_heads);
    if (p.num_kv_heads <= 0) fail(E, "num_kv_heads (%d) must be positive", p.num_kv_heads);
    if (p.dim % p.num_heads != 0) fail(E, "num_heads (%d) must divide dim (%d)", p.num_heads, p.dim);
    if (p.num_heads % p.num_kv_heads != 0)
        fail(E, "num_kv_heads (%d) must divide num_heads (%d)", p.num_kv_heads, p.num_heads);
    int32_t dh = p.dim / p.num_heads;
    if (dh % 2 != 0)
        fail(E, "head_dim = dim / num_heads (%d / %d = %d) must be even: rotary embedding rotates pairs",
             p.dim, p.num_heads, dh);
    if (p.mlp_ratio <= 0 || p.mlp_ratio > kMaxRatio)
        fail(E, "mlp_ratio (%d) must be in [1, %d]", p.mlp_ratio, kMaxRatio);
    if (p.conv_kernel < 1 || p.conv_kernel > kMaxConv)
        fail(E, "conv_kernel (%d) must be in [1, %d]", p.conv_kernel, kMaxConv);
    if (p.routing != HSPMN_ROUTING_TOPK && p.routing != HSPMN_ROUTING_THRESHOLD)
        fail(E, "routing (%d) must be 0 (topk) or 1 (threshold)", p.routing);
    if (!(std::isfinite(p.rope_base) && p.rope_base > 1.0f))
        fail(E, "rope_base (%g) must be finite and > 1", static_cast<double>(p.rope_base));
    if (!(p.sparsity_k > 0.0f && p.sparsity_k <= 1.0f))
        fail(E, "sparsity_k (%g) must be in (0, 1]", static_cast<double>(p.sparsity_k));
    if (!(std::isfinite(p.router_sparsity_coef) && p.router_sparsity_coef >= 0.0f))
        fail(E, "router_sparsity_coef (%g) must be finite and >= 0", static_cast<double>(p.router_sparsity_coef));
    if (!(std::isfinite(p.router_entropy_coef) && p.router_entropy_coef >= 0.0f))
        fail(E, "router_entropy_coef (%g) must be finite and >= 0", static_cast<double>(p.router_entropy_coef));
    if (!(std::isfinite(p.norm_eps) && p.norm_eps > 0.0f))
        fail(E, "norm_eps (%g) must be finite and > 0", static_cast<double>(p.norm_eps));
}

BlockConfig make_block_config(const hspmn_block_params& p) {
    validate_block_params(p);
    BlockConfig c;
    c.params = p;
    c.D = p.dim;
    c.H = p.num_heads;
    c.Hkv = p.num_kv_heads;
    c.Dh = c.D / c.H;
    c.F = static_cast<int64_t>(p.mlp_ratio) * c.D;
    c.conv_kernel = p.conv_kernel;
    return c;
}

std::array<ParamInfo, P_COUNT> param_table(const BlockConfig& c) {
    const int64_t kv = c.Hkv * c.Dh;
    std::array<ParamInfo, P_COUNT> t = {{
        {kNames[P_ROUTER_W], 1, {c.D, 1}, 0},
        {kNames[P_ROUTER_B], 1, {1, 1}, 0},
        {kNames[P_ROUTER_LOG_TEMP], 1, {1, 1}, 0},
        {kNames[P_REFLEX_NORM], 1, {c.D, 1}, 0},
        {kNames[P_REFLEX_CONV], 2, {c.D, c.conv_kernel}, 0},
        {kNames[P_REFLEX_GATE], 2, {c.F, c.D}, 0},
        {kNames[P_REFLEX_UP], 2, {c.F, c.D}, 0},
        {kNames[P_REFLEX_DOWN], 2, {c.D, c.F}, 0},
        {kNames[P_ATTN_NORM], 1, {c.D, 1}, 0},
        {kNames[P_ATTN_Q], 2, {c.D, c.D}, 0},
        {kNames[P_ATTN_K], 2, {kv, c.D}, 0},
        {kNames[P_ATTN_V], 2, {kv, c.D}, 0},
        {kNames[P_ATTN_O], 2, {c.D, c.D}, 0},
    }};
    for (auto& p : t) p.numel = p.shape[0] * (p.ndim == 2 ? p.shape[1] : 1);
    return t;
}

const char* param_name(int index) { return index >= 0 && index < P_COUNT ? kNames[index] : nullptr; }

int param_index(const char* name) {
    if (!name) return -1;
    for (int i = 0; i < P_COUNT; ++i)
        if (std::strcmp(kNames[i], name) == 0) return i;
    return -1;
}

int64_t topk_count(int64_t S, float rho) {
    // The float32 rho widened to double: S * rho is exact there (README), float32 could round up.
    int64_t k = static_cast<int64_t>(std::floor(static_cast<double>(S) * static_cast<double>(rho)));
    return k < 1 ? 1 : (k > S ? S : k);
}

}  // namespace hspmn
