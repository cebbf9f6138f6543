#include "symbols/kernel_symbols.h"

#include <spdlog/spdlog.h>

namespace leakwatch {

namespace {

constexpr std::string_view kKernel = "[kernel]";
// Bounds what is remembered of unnamed addresses; forgetting them costs at most one more read.
constexpr size_t kMaxUnnamed = 65536;

// "[bpf]" (JIT-compiled programs) and "[__builtin__ftrace]"-like entries (trampolines) are
// kallsyms' own, not modules: they are not counted by module loads and unloads.
bool is_module(std::string_view name) {
    return name != kKernel && name != "[bpf]" && !name.starts_with("[__builtin__");
}

Frame unnamed(uint64_t address) {
    Frame f;
    f.address = address;
    f.module = "[unknown]";
    return f;
}

}  // namespace

Result<KernelSymbols> KernelSymbols::load(KernelSymbolsOptions options) {
    KernelSymbols k(std::move(options));
    k.last_read_ = k.options_.now();
    if (auto ok = k.install(read(k.options_)); !ok) return std::unexpected(ok.error());
    return k;
}

KernelSymbols::Read KernelSymbols::read(const KernelSymbolsOptions& options) {
    // The count before and after the read: a module that came or went during it may or may not
    // be in the table, so the table counts as of `before`, and a module it shows for the first
    // time as loaded by `after`.
    auto before = options.module_generation();
    auto table = Kallsyms::load(options.path, options.sys_module);
    auto after = options.module_generation();
    return Read{std::move(table), before, after};
}

Result<void> KernelSymbols::install(Read read) {
    if (!read.table) return std::unexpected(read.table.error());
    table_ = std::make_shared<const Kallsyms>(std::move(*read.table));
    generation_ = read.before && read.after ? read.before : std::nullopt;

    std::map<std::string, Module, std::less<>> modules;
    std::string loaded, unloaded;
    for (const auto& [name, start] : table_->module_starts()) {
        if (!is_module(name)) continue;
        auto old = modules_.find(name);
        if (old != modules_.end() && old->second.start == start) {
            modules.emplace(name, old->second);
            continue;
        }
        modules.emplace(name, Module{start, read.after.value_or(0)});
        if (version_ > 0) loaded += " " + name;
    }
    for (const auto& [name, m] : modules_)
        if (!modules.contains(name)) unloaded += " " + name;
    modules_ = std::move(modules);
    if (version_ > 0)
        spdlog::info(
            "kernel symbols read again: {} symbols; modules new since the last read:{}; "
            "gone:{}",
            table_->size(), loaded.empty() ? " none" : loaded,
            unloaded.empty() ? " none" : unloaded);
    version_++;
    return {};
}

Frame KernelSymbols::symbolize(uint64_t address, uint32_t modules) {
    Frame f = table_->symbolize(address);
    if (f.module == kKernel) return f;
    // A count above the kernel's own is from before it restarted (the BPF object was loaded
    // anew under stacks that outlived it): the stack's provenance is unknown, name what is there.
    bool tracked = counts_modules() &&
                   (modules <= *generation_ || modules <= options_.module_generation().value_or(0));
    if (tracked && modules > *generation_) {
        // Stored after modules came or went since the table was read: outside the core kernel,
        // the address may be a module the table does not have, in memory the table gives to
        // another module or to a BPF program (they share the address range), or to the end of
        // one's last function. It waits for a newer read.
        due_ = true;
        return unnamed(address);
    }
    if (f.symbol.empty()) {
        if (unnamed_.size() >= kMaxUnnamed) unnamed_.clear();
        auto [it, first] = unnamed_.try_emplace(address, version_);
        if (first || it->second == version_) due_ = true;
        return f;
    }
    if (!tracked || !is_module(f.module)) return f;
    auto m = modules_.find(f.module.str());
    if (m == modules_.end() || m->second.known_at > modules)
        return unnamed(address);  // loaded after the stack was stored: not its code
    return f;
}

uint64_t KernelSymbols::refresh() {
    std::optional<Read> done;
    if (pending_.valid()) {
        if (pending_.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
            return version_;
        done = pending_.get();
    } else {
        if (!due_ || options_.now() - last_read_ < options_.min_reread_interval) return version_;
        // Addresses met while the read runs may be newer than it: they make it due again.
        due_ = false;
        last_read_ = options_.now();
        if (options_.background) {
            pending_ =
                std::async(std::launch::async, [options = options_] { return read(options); });
            return version_;
        }
        done = read(options_);
    }
    if (auto ok = install(std::move(*done)); !ok)
        spdlog::warn("reading kernel symbols again: {} (keeping those read before)",
                     ok.error().message);
    return version_;
}

}  // namespace leakwatch
