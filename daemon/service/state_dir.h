// The daemon's state directory (StateDirectory= in the unit, whose path systemd passes in
// $STATE_DIRECTORY, or --state-dir): what it keeps across restarts besides the BPF maps, such as
// the leak detector's history. Files are replaced atomically (a temporary file, fsync, rename),
// so a crash leaves the old or the new one, never a mix.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "util/result.h"

namespace leakwatch {

class StateDir {
  public:
    explicit StateDir(std::string dir = {}) : dir_(std::move(dir)) {}
    bool enabled() const { return !dir_.empty(); }
    const std::string& path() const { return dir_; }

    Result<void> write(const std::string& name, std::string_view bytes) const;
    // The file's bytes; nullopt when it does not exist. Larger than `max` is an error.
    Result<std::optional<std::string>> read(const std::string& name, size_t max) const;

  private:
    std::string dir_;
};

}  // namespace leakwatch
