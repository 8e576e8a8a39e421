// The one error style of the plugin (README, Layout): a function that can fail returns Result<T>,
// either its value or one line that says what failed; Status (Result<void>) when there is no value.
// Units never exit, throw or log: the glue decides what a failure means (at startup glue::fail()
// stops uWSGI with `[cowguard] <line>`; after startup one logged line).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace cowguard {

// What failed, in one line (no newline); the caller may prefix it with what it was doing.
struct Error {
    std::string line;
};
inline Error fail_with(std::string line) { return Error{std::move(line)}; }

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: `return value;`
    Result(Error e) : v_(std::in_place_index<1>, std::move(e.line)) {}  // NOLINT: `return fail_with(...);`

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    const T& value() const& { return std::get<0>(v_); }
    T& value() & { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    const T& operator*() const& { return value(); }
    T& operator*() & { return value(); }
    const T* operator->() const { return &value(); }
    T* operator->() { return &value(); }
    T value_or(T fallback) const& { return ok() ? value() : std::move(fallback); }
    // Only when !ok().
    const std::string& error() const { return std::get<1>(v_); }

private:
    std::variant<T, std::string> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;                                   // success: `return {};`
    Result(Error e) : error_(std::move(e.line)) {}  // NOLINT: `return fail_with(...);`

    bool ok() const { return !error_; }
    explicit operator bool() const { return ok(); }
    // Only when !ok().
    const std::string& error() const { return *error_; }

private:
    std::optional<std::string> error_;
};

using Status = Result<void>;

}  // namespace cowguard
