// A validated block configuration with its derived sizes, and the parameter table (names, shapes,
// fan-in) that the ABI, every backend and the checkpoints share.
#pragma once

#include <array>
#include <cstdint>

#include "hspmn.h"

namespace hspmn {

struct BlockConfig {
    hspmn_block_params params;
    int64_t D, H, Hkv, Dh, F, conv_kernel;
};

// MODEL.md's defaults: the "default V" ending each field's comment in hspmn.h (check_native.py checks
// that the two agree); fields not set (reserved) are 0.
hspmn_block_params default_block_params();
// Throws Error{INVALID_ARGUMENT} naming the first offending field.
void validate_block_params(const hspmn_block_params& p);
BlockConfig make_block_config(const hspmn_block_params& p);  // validates

// MODEL.md "Parameters of one block", in state_dict order.
enum ParamIndex : int {
    P_ROUTER_W, P_ROUTER_B, P_ROUTER_LOG_TEMP,
    P_REFLEX_NORM, P_REFLEX_CONV, P_REFLEX_GATE, P_REFLEX_UP, P_REFLEX_DOWN,
    P_ATTN_NORM, P_ATTN_Q, P_ATTN_K, P_ATTN_V, P_ATTN_O,
    P_COUNT
};

struct ParamInfo {
    const char* name;
    int32_t ndim;
    int64_t shape[2];
    int64_t numel;
};

std::array<ParamInfo, P_COUNT> param_table(const BlockConfig& cfg);
const char* param_name(int index);  // static storage
int param_index(const char* name);  // -1 when unknown

// k of top-k routing, max(1, floor(S * rho)).
int64_t topk_count(int64_t S, float rho);

}  // namespace hspmn
