// See include/cowguard/malloc_stats.h.
#include "cowguard/malloc_stats.h"

#include <cstdlib>
#include <string>

namespace cowguard {

namespace {

// Five unsigned decimal integers separated by blanks, nothing else.
bool parse_row(std::string_view line, uint64_t (&out)[5]) {
    size_t i = 0;
    for (int n = 0; n < 5; n++) {
        while (i < line.size() && line[i] == ' ') i++;
        size_t start = i;
        uint64_t v = 0;
        while (i < line.size() && line[i] >= '0' && line[i] <= '9') {
            if (i - start >= 18) return false;
            v = v * 10 + static_cast<uint64_t>(line[i] - '0');
            i++;
        }
        if (i == start) return false;
        out[n] = v;
    }
    while (i < line.size() && line[i] == ' ') i++;
    return i == line.size();
}

}  // namespace

Result<std::vector<SizeClass>> parse_malloc_stats(std::string_view text) {
    size_t header = text.find("class   size   num pools   blocks in use  avail blocks");
    if (header == std::string_view::npos) return fail_with("no size class table");
    size_t pos = text.find('\n', header);
    if (pos == std::string_view::npos) return fail_with("no size class table");
    pos = text.find('\n', pos + 1);  // the "-----" underline
    std::vector<SizeClass> out;
    while (pos != std::string_view::npos && pos + 1 < text.size()) {
        size_t end = text.find('\n', pos + 1);
        std::string_view line = text.substr(pos + 1, end == std::string_view::npos ? std::string_view::npos : end - pos - 1);
        if (line.find_first_not_of(' ') == std::string_view::npos) break;  // the blank line after the table
        uint64_t f[5];
        if (!parse_row(line, f)) return fail_with("a size class row is not five unsigned integers");
        if (f[1] == 0 || (!out.empty() && f[1] <= out.back().size)) return fail_with("size classes not increasing");
        out.push_back(SizeClass{static_cast<size_t>(f[1]), f[4]});
        pos = end;
    }
    if (out.empty()) return fail_with("no size class row");
    return out;
}

}  // namespace cowguard
