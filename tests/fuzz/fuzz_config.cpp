// The YAML config on arbitrary text: a config file is an operator's, but a reload reads
// whatever is in it, and a parser that crashes on a typo takes the daemon with it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    auto config = leakwatch::parse_config(text, "fuzz.yaml");
    if (config) {
        // What parses is usable: every rule has a name and at least one criterion.
        for (const auto& rule : config->watch) {
            if (rule.name.empty()) __builtin_trap();
        }
    } else if (config.error().message.empty()) {
        __builtin_trap();  // an error always says why
    }
    return 0;
}
