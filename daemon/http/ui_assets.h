// The landing page's files (daemon/http/ui/), built into the binary so that the page needs
// nothing but the daemon: no files at run time, no network.
#pragma once

#include <array>
#include <string_view>

namespace leakwatch {

struct UiAsset {
    const char* path;  // where it is served
    const char* content_type;
    std::string_view body;
};

// Generated at build time by cmake/embed_ui.cmake from daemon/http/ui/.
extern const std::array<UiAsset, 3> kUiAssets;

}  // namespace leakwatch
