// Errors are values: a function that can fail returns Result<T>, and the
// message names the cause (file, key, line, errno) so callers only add context.
#pragma once

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <utility>

namespace leakwatch {

struct Error {
    std::string message;
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(std::string message) {
    return std::unexpected(Error{std::move(message)});
}

// "what: strerror(err)" for an errno-style code (positive or negative).
inline std::unexpected<Error> fail_errno(const std::string& what, int err) {
    if (err < 0) err = -err;
    return fail(what + ": " + std::strerror(err));
}

}  // namespace leakwatch
