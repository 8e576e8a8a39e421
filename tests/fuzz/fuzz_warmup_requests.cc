// libFuzzer target: parse_requests on arbitrary bytes (a cowguard-warmup-requests file). Seeds:
// corpus/warmup_requests/. Built and run by tests/fuzz/run.sh (make fuzz).
//
// What must hold, whatever the input (include/cowguard/warmup_requests.h):
//   - either an error "N: ..." on one line, N the 1-based number of an input line, and no request;
//     or requests in increasing line order, each with an upper-case method, a target starting with
//     '/' and no space, header names of letters, digits and '-', each name once;
//   - format_request() of each request parses back to the same request (on line 1).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cowguard/warmup_requests.h"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
    fprintf(stderr, "fuzz_warmup_requests: %s: %s\n", what, detail.c_str());
    abort();
}

bool same(const cowguard::warmup::Request& a, const cowguard::warmup::Request& b) {
    return a.method == b.method && a.path == b.path && a.query == b.query && a.headers == b.headers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cowguard::warmup;
    std::string_view text(reinterpret_cast<const char*>(data), size);
    size_t lines = 1;
    for (char c : text) lines += c == '\n';
    auto r = parse_requests(text);
    if (!r) {
        const std::string& e = r.error();
        if (e.find('\n') != std::string::npos) fail("error over two lines", e);
        size_t colon = e.find(": ");
        if (colon == std::string::npos || colon == 0) fail("error without a line number", e);
        unsigned long n = std::strtoul(e.substr(0, colon).c_str(), nullptr, 10);
        if (n < 1 || n > lines) fail("error line out of range", e);
        return 0;
    }
    int last = 0;
    for (const Request& q : *r) {
        if (q.line <= last || static_cast<size_t>(q.line) > lines) fail("line order", std::to_string(q.line));
        last = q.line;
        if (q.method.empty()) fail("empty method", "");
        for (char c : q.method)
            if (c < 'A' || c > 'Z') fail("method", q.method);
        if (q.path.empty() || q.path[0] != '/') fail("path", q.path);
        for (char c : q.path + q.query)
            if (c <= ' ' || c >= 0x7f) fail("target character", q.path);
        for (size_t i = 0; i < q.headers.size(); i++) {
            if (q.headers[i].first.empty()) fail("empty header name", "");
            for (size_t j = 0; j < i; j++) {
                std::string a = q.headers[i].first, b = q.headers[j].first;
                for (auto& c : a) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                for (auto& c : b) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                if (a == b) fail("header twice", a);
            }
        }
        std::string line = format_request(q);
        auto again = parse_requests(line);
        if (!again) fail("formatted request does not parse", line + " -> " + again.error());
        if (again->size() != 1 || !same((*again)[0], q)) fail("round trip", line);
    }
    return 0;
}
