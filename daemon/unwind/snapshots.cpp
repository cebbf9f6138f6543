#include "unwind/snapshots.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "leakwatch.h"
#include "symbols/hotspot.h"
#include "util/clock.h"

namespace leakwatch {

static_assert(kJavaMethodTag == LW_JAVA_METHOD);

void complete_snapshot(SnapshotMaps& maps, Unwinder& unwinder, const lw_snapshot& snapshot) {
    // A process no longer watched (it exited, or was purged meanwhile): nothing of it is
    // written back, so nothing is left behind in the maps.
    if (!maps.watching(snapshot.tgid)) return;
    lw_stack stack = snapshot.frames;
    stack.flags = 0;
    // As deep as the BPF walk goes, so that a stack completed here and the same stack walked
    // in one go later have the same frames (and the same id, by which the aggregator merges).
    stack.nr = std::min<uint32_t>(stack.nr, LW_DWARF_FRAMES);
    UnwindStart start;
    start.ip = snapshot.ip;
    start.exact_ip = snapshot.flags & LW_SNAPSHOT_EXACT_IP;
    start.sp = snapshot.sp;
    start.bp = snapshot.bp;
    start.stack =
        std::span<const uint8_t>(snapshot.stack, std::min<size_t>(snapshot.len, LW_SNAPSHOT_BYTES));
    // The walk's first frame is the snapshot's own ip, the stack's last frame so far; it goes
    // no deeper than the stack holds (rules past that would never be used).
    auto steps = unwinder.unwind_snapshot(static_cast<int>(snapshot.tgid), start,
                                          LW_DWARF_FRAMES - stack.nr + 1);
    const uint32_t first = stack.nr;  // the snapshot's own ip is frame first - 1
    for (size_t i = 0; i < steps.size(); i++) {
        const auto& [pc, rule, java_method] = steps[i];
        // Its file's CFI is still being read: no rule to store, and the walk stopped here.
        if (rule.kind == UnwindRule::kPending) break;
        lw_unwind_rule r{};
        r.kind = rule.kind;
        r.cfa_off = rule.cfa_offset;
        r.bp_off = rule.bp_offset;
        r.bp_saved = rule.bp_saved ? 1 : 0;
        // The first step of a walk from a page fault is an instruction's own rule.
        maps.set_unwind_rule(snapshot.tgid, i == 0 && start.exact_ip ? pc | LW_RULE_EXACT : pc, r);
        if (i > 0) stack.ips[stack.nr++] = pc;
        // An interpreted Java frame is recorded as its method, as the BPF walk records it.
        uint32_t at = i == 0 ? first - 1 : stack.nr - 1;
        if (java_method != 0 && at > 0 && at < LW_DWARF_FRAMES)
            stack.ips[at] = java_method | LW_JAVA_METHOD;
    }
    maps.set_stack(snapshot.tgid, snapshot.id, stack);
    // The rules are in: walks through these frames go on in BPF, and a walk that misses
    // here again (a rule evicted) sends a new snapshot.
    maps.snapshot_done(snapshot.tgid, snapshot.key);
    spdlog::debug(
        "pid {}: stack snapshot unwound {:.3f} ms after it was taken: {} frames, {} "
        "rules",
        snapshot.tgid, static_cast<double>(monotonic_ns() - snapshot.ts_ns) / 1e6, stack.nr,
        steps.size());
}

}  // namespace leakwatch
