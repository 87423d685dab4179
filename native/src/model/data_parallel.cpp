// Data-parallel training of the language model (native/README.md "Data parallelism"): gradients
// averaged in buckets as backward finishes them, router fractions averaged, and under ZeRO-1 each
// rank's share of the AdamW update followed by an all-gather of the weights. Model's hooks call in
// here only when a communicator is attached (dp_ set).
#include "data_parallel.h"

#include <algorithm>
#include <memory>

#include "../core/error.h"
#include "../core/objects.h"

namespace hspmn {

bool Model::dp_sharded() const { return dp_ && dp_->params.shard_optimizer; }

void Model::dp_release() noexcept {
    delete dp_;
    dp_ = nullptr;
}

void Model::raw_copy(void* dst, const void* src, std::size_t bytes) const {
    hspmn_tensor d, s;
    view(d, dst, HSPMN_DTYPE_BF16, {static_cast<int64_t>(bytes / 2)});
    view(s, const_cast<void*>(src), HSPMN_DTYPE_BF16, {static_cast<int64_t>(bytes / 2)});
    be_.copy(&d, &s);
}

// The gradients in the order backward finishes them: the final norm, blocks L-1 .. 0, the embedding.
std::vector<DpGroup> Model::dp_groups() const {
    const int P = param_count();
    std::vector<DpGroup> groups;
    auto bytes_of = [&](int i) { return params_list_[static_cast<std::size_t>(i)].numel * 4; };
    groups.push_back({{P - 1}, bytes_of(P - 1)});
    for (int64_t i = L_ - 1; i >= 0; --i) {
        DpGroup g{{}, 0};
        for (int j = 0; j < P_COUNT; ++j) {
            const int k = static_cast<int>(1 + i * P_COUNT + j);
            g.params.push_back(k);
            g.bytes += bytes_of(k);
        }
        groups.push_back(std::move(g));
    }
    groups.push_back({{0}, bytes_of(0)});
    return groups;
}

void Model::set_comm(Comm* comm, const hspmn_data_parallel_params& p) {
    if (dp_sharded() && (!comm || comm != dp_->comm || !p.shard_optimizer || comm->world() != dp_->comm->world())) {
        // Leaving a sharding: every parameter gets its full moments back first (collective).
        try {
            dp_unshard();
        } catch (const Error& e) {
            // Detach all the same (a dead communicator must not pin the model), moments zero.
            for (Param& q : params_list_) {
                q.m.ensure(static_cast<std::size_t>(q.numel) * 4);
                q.v.ensure(static_cast<std::size_t>(q.numel) * 4);
                be_.zero_raw(q.m.as<void>(), static_cast<std::size_t>(q.numel) * 4);
                be_.zero_raw(q.v.as<void>(), static_cast<std::size_t>(q.numel) * 4);
            }
            dp_release();
            fail(e.status, "%s (the model was detached with its AdamW moments zeroed: they could not be gathered)",
                 e.message.c_str());
        }
        dp_release();
    }
    if (!comm) {
        dp_release();
        return;
    }
    if (dp_sharded() && p.shard_optimizer) {
        // Same comm, still sharded: keep the shard state, take the new bucket size.
        dp_->params.bucket_bytes = p.bucket_bytes;
        dp_->buckets = plan_buckets(dp_groups(), p.bucket_bytes);
        return;
    }
    std::unique_ptr<DataParallel> d(new DataParallel(be_));
    d->comm = comm;
    d->params = p;
    d->buckets = plan_buckets(dp_groups(), p.bucket_bytes);
    const int P = param_count();
    for (int i = 0; i < P; ++i) {
        d->offset.push_back(d->total);
        d->numel.push_back(params_list_[static_cast<std::size_t>(i)].numel);
        d->total += params_list_[static_cast<std::size_t>(i)].numel;
    }
    d->grad_bytes = d->total * 4;
    if (p.shard_optimizer && !dp_sharded()) {
        const int W = comm->world();
        d->chunk = shard_chunk(d->total, W);
        d->lo = d->chunk * comm->rank();
        d->mine = segments_in(d->offset, d->numel, d->lo, d->lo + d->chunk);
        d->zm.ensure(static_cast<std::size_t>(d->chunk) * 4);
        d->zv.ensure(static_cast<std::size_t>(d->chunk) * 4);
        // The all-gather moves at most about bucket_bytes at a time.
        d->window_elems = std::max<int64_t>(1, std::min<int64_t>(d->chunk, p.bucket_bytes / 4 / W));
        d->window.ensure(static_cast<std::size_t>(d->window_elems * W) * 4);
        for (const DpSegment& g : d->mine) {
            Param& q = params_list_[static_cast<std::size_t>(g.param)];
            raw_copy(d->zm.as<float>() + (g.flat - d->lo), q.m.as<float>() + g.begin, static_cast<std::size_t>(g.count) * 4);
            raw_copy(d->zv.as<float>() + (g.flat - d->lo), q.v.as<float>() + g.begin, static_cast<std::size_t>(g.count) * 4);
        }
        be_.synchronize();
        for (Param& q : params_list_) {
            q.m.release();
            q.v.release();
        }
    }
    dp_release();
    dp_ = d.release();
}

hspmn_data_parallel_stats Model::data_parallel_stats() const {
    hspmn_data_parallel_stats s{};
    if (!dp_) return s;
    s.backwards = dp_->backwards;
    s.buckets = static_cast<int64_t>(dp_->buckets.size());
    s.bytes = dp_->grad_bytes;
    s.all_reduce_ms = dp_->last.busy_ms;
    s.overlapped_ms = dp_->last.overlapped_ms;
    return s;
}

// ---- backward: buckets started as their last group finishes

// Each rank differentiates loss_scale / world times its loss, and the buckets are summed: the same
// mean as dividing the sum, but every rank's bf16 activation gradients are then those one rank with
// the whole batch would have (its 1 / (world * B * S) scale), not a rounding of them divided later.
// With accumulation the gradients held are already the ranks' average A, the same on every rank:
// only rank 0 keeps it, the others add to zero, so the sum is A + the new average (not world * A).
float Model::dp_backward_begin(float loss_scale, bool accumulate) {
    if (accumulate && dp_->comm->rank() != 0) zero_grad();
    dp_->next_bucket = 0;
    dp_->comm->begin_timing();
    return loss_scale / static_cast<float>(dp_->comm->world());
}

void Model::dp_group_done(int group) {
    DataParallel& d = *dp_;
    while (d.next_bucket < d.buckets.size() && d.buckets[d.next_bucket].ready_after == group) {
        const DpBucket& b = d.buckets[d.next_bucket++];
        std::vector<FloatSpan> spans;
        for (int i : b.params) spans.push_back({params_list_[static_cast<std::size_t>(i)].grad, params_list_[static_cast<std::size_t>(i)].numel});
        d.comm->all_reduce(spans.data(), static_cast<int>(spans.size()), false);
    }
}

void Model::dp_backward_end() {
    dp_->comm->join();
    dp_->last = dp_->comm->timing();
    ++dp_->backwards;
}

// ---- ZeRO-1

void Model::dp_adamw_shard(AdamwScalars s, float weight_decay) {
    DataParallel& d = *dp_;
    for (const DpSegment& g : d.mine) {
        Param& p = params_list_[static_cast<std::size_t>(g.param)];
        s.weight_decay = p.decay ? weight_decay : 0.0f;
        be_.adamw_update(p.master.as<float>() + g.begin, p.value + g.begin, p.grad + g.begin,
                         d.zm.as<float>() + (g.flat - d.lo), d.zv.as<float>() + (g.flat - d.lo), g.count, s);
    }
    // Every rank's updated share to every rank: master (f32) then the bf16 copy, a window at a time.
    const int W = d.comm->world();
    const int64_t w = d.window_elems;
    for (int pass = 0; pass < 2; ++pass) {
        const std::size_t esz = pass == 0 ? 4 : 2;
        char* win = d.window.as<char>();
        auto addr = [&](const DpSegment& g) -> char* {
            Param& p = params_list_[static_cast<std::size_t>(g.param)];
            return pass == 0 ? reinterpret_cast<char*>(p.master.as<float>() + g.begin)
                             : reinterpret_cast<char*>(p.value + g.begin);
        };
        for (int64_t k0 = 0; k0 < d.chunk; k0 += w) {
            const int64_t n = std::min(w, d.chunk - k0);
            for (const DpSegment& g : segments_in(d.offset, d.numel, d.lo + k0, d.lo + k0 + n))
                raw_copy(win + (static_cast<std::size_t>(d.comm->rank()) * w + (g.flat - d.lo - k0)) * esz, addr(g),
                         static_cast<std::size_t>(g.count) * esz);
            d.comm->all_gather(win, static_cast<std::size_t>(w) * esz);
            d.comm->join();
            for (int r = 0; r < W; ++r) {
                if (r == d.comm->rank()) continue;
                const int64_t base = d.chunk * r + k0;
                for (const DpSegment& g : segments_in(d.offset, d.numel, base, base + n))
                    raw_copy(addr(g), win + (static_cast<std::size_t>(r) * w + (g.flat - base)) * esz,
                             static_cast<std::size_t>(g.count) * esz);
            }
        }
    }
}

void Model::dp_get_moment(int i, int which, float* host) const {
    DataParallel& d = *dp_;
    const Param& p = params_list_[static_cast<std::size_t>(i)];
    // Every rank's share in place, zeros elsewhere, summed over the ranks: x + 0 is exact.
    RawBuffer full(be_);
    full.ensure(static_cast<std::size_t>(p.numel) * 4);
    const RawBuffer& z = which == 0 ? d.zm : d.zv;
    for (const DpSegment& g : segments_in(d.offset, d.numel, d.lo, d.lo + d.chunk))
        if (g.param == i)
            raw_copy(full.as<float>() + g.begin, z.as<float>() + (g.flat - d.lo), static_cast<std::size_t>(g.count) * 4);
    FloatSpan span{full.as<float>(), p.numel};
    d.comm->all_reduce(&span, 1, false);
    d.comm->join();
    be_.copy_to_host_raw(host, full.as<void>(), static_cast<std::size_t>(p.numel) * 4);
}

void Model::dp_set_moment(int i, int which, const float* host) {
    DataParallel& d = *dp_;
    RawBuffer& z = which == 0 ? d.zm : d.zv;
    for (const DpSegment& g : d.mine)
        if (g.param == i)
            be_.copy_from_host_raw(z.as<float>() + (g.flat - d.lo), host + g.begin, static_cast<std::size_t>(g.count) * 4);
}

void Model::dp_unshard() {
    DataParallel& d = *dp_;
    for (Param& q : params_list_) {
        q.m.ensure(static_cast<std::size_t>(q.numel) * 4);  // zero-filled
        q.v.ensure(static_cast<std::size_t>(q.numel) * 4);
    }
    for (const DpSegment& g : d.mine) {
        Param& q = params_list_[static_cast<std::size_t>(g.param)];
        raw_copy(q.m.as<float>() + g.begin, d.zm.as<float>() + (g.flat - d.lo), static_cast<std::size_t>(g.count) * 4);
        raw_copy(q.v.as<float>() + g.begin, d.zv.as<float>() + (g.flat - d.lo), static_cast<std::size_t>(g.count) * 4);
    }
    std::vector<FloatSpan> spans;
    for (Param& q : params_list_) {
        spans.push_back({q.m.as<float>(), q.numel});
        spans.push_back({q.v.as<float>(), q.numel});
    }
    d.comm->all_reduce(spans.data(), static_cast<int>(spans.size()), false);
    d.comm->join();
}

void Model::dp_mean_fractions(float* f) const { dp_->comm->all_reduce_host(f, L_, true); }

}  // namespace hspmn
