// /proc parsing (pure). See include/cowguard/procfs.h.
#include "cowguard/procfs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

namespace cowguard {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }
bool is_blank(char c) { return c == ' ' || c == '\t'; }

// Strict unsigned decimal with overflow check; consumes digits from s[pos].
bool take_u64(std::string_view s, size_t& pos, uint64_t& out) {
    size_t start = pos;
    uint64_t v = 0;
    while (pos < s.size() && is_digit(s[pos])) {
        unsigned d = static_cast<unsigned>(s[pos] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
        pos++;
    }
    if (pos == start) return false;
    out = v;
    return true;
}

// A mapping header: "55d0c5a4e000-55d0c5a76000 r--p ...". Only its start is checked; the path
// at its end may contain anything, including "Rss:".
bool is_mapping_header(std::string_view line) {
    size_t i = 0;
    while (i < line.size() && is_hex(line[i])) i++;
    if (i == 0 || i >= line.size() || line[i] != '-') return false;
    size_t j = ++i;
    while (i < line.size() && is_hex(line[i])) i++;
    return i > j && i < line.size() && line[i] == ' ';
}

// "Key:" at the start of a field line; empty when the line does not start that way.
std::string_view field_key(std::string_view line) {
    size_t i = 0;
    while (i < line.size() && (is_digit(line[i]) || (line[i] >= 'A' && line[i] <= 'Z') ||
                               (line[i] >= 'a' && line[i] <= 'z') || line[i] == '_'))
        i++;
    if (i == 0 || i >= line.size() || line[i] != ':') return {};
    return line.substr(0, i);
}

// The value part of "Rss:   1234 kB", converted to bytes.
bool parse_kb_value(std::string_view value, uint64_t& bytes) {
    size_t pos = 0;
    while (pos < value.size() && is_blank(value[pos])) pos++;
    uint64_t kb;
    if (!take_u64(value, pos, kb)) return false;
    size_t digits_end = pos;
    while (pos < value.size() && is_blank(value[pos])) pos++;
    if (pos == digits_end || value.substr(pos, 2) != "kB") return false;
    pos += 2;
    while (pos < value.size() && is_blank(value[pos])) pos++;
    if (pos != value.size()) return false;
    if (kb > UINT64_MAX / 1024) return false;
    bytes = kb * 1024;
    return true;
}

bool add_checked(uint64_t& sum, uint64_t v) {
    if (sum > UINT64_MAX - v) return false;
    sum += v;
    return true;
}

}  // namespace

Result<MemFigures> parse_smaps(std::string_view text) {
    MemFigures sum;
    bool saw_rss = false;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        std::string_view line = text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
        pos = eol == std::string_view::npos ? text.size() : eol + 1;

        if (line.empty() || is_mapping_header(line)) continue;
        std::string_view key = field_key(line);
        if (key.empty()) return fail_with("not smaps: a line is neither a mapping nor Key: value");  // truncated or foreign

        uint64_t* target = nullptr;
        if (key == "Rss") target = &sum.rss, saw_rss = true;
        else if (key == "Pss") target = &sum.pss;
        else if (key == "Shared_Clean") target = &sum.shared_clean;
        else if (key == "Shared_Dirty") target = &sum.shared_dirty;
        else if (key == "Private_Clean") target = &sum.private_clean;
        else if (key == "Private_Dirty") target = &sum.private_dirty;
        else if (key == "Swap") target = &sum.swap;
        else if (key == "Anonymous") target = &sum.anonymous;
        if (!target) continue;  // a field we don't use (Size, VmFlags, THPeligible, ...)

        uint64_t bytes;
        if (!parse_kb_value(line.substr(key.size() + 1), bytes) || !add_checked(*target, bytes))
            return fail_with("not smaps: " + std::string(key) + " has a malformed value");
    }
    if (!saw_rss) return fail_with("not smaps: no Rss line");
    return sum;
}

Result<StatFigures> parse_stat(std::string_view text) {
    const Error malformed = fail_with("not /proc/PID/stat text, or cut short");
    StatFigures st;

    // "PID (comm) S ..."
    size_t pos = 0;
    uint64_t pid;
    if (!take_u64(text, pos, pid) || pid == 0 || pid > INT_MAX) return malformed;
    if (text.substr(pos, 2) != " (") return malformed;
    st.pid = static_cast<int>(pid);
    // comm may contain ')' itself: the one that closes it is the last in the text.
    size_t close = text.rfind(')');
    if (close == std::string_view::npos || close < pos + 1) return malformed;
    pos = close + 1;
    if (text.substr(pos, 1) != " " || pos + 1 >= text.size()) return malformed;
    char state = text[pos + 1];
    if (!((state >= 'A' && state <= 'Z') || (state >= 'a' && state <= 'z'))) return malformed;
    st.state = state;
    pos += 2;

    // Fields 4..24 (1-based, as in proc(5)); some unused ones (tpgid, priority, ...) are signed.
    for (int field = 4; field <= 24; field++) {
        if (pos >= text.size() || text[pos] != ' ') return malformed;
        pos++;
        uint64_t* target = nullptr;
        switch (field) {
            case 10: target = &st.minflt; break;
            case 12: target = &st.majflt; break;
            case 14: target = &st.utime_ticks; break;
            case 15: target = &st.stime_ticks; break;
            case 23: target = &st.vsize; break;
            case 24: target = &st.rss_pages; break;
            default: break;
        }
        if (target) {
            if (!take_u64(text, pos, *target)) return malformed;
        } else {
            if (pos < text.size() && text[pos] == '-') pos++;
            size_t digits = pos;
            while (pos < text.size() && is_digit(text[pos])) pos++;
            if (pos == digits) return malformed;
        }
    }
    // The rss field must be complete: text cut inside it would still parse as a smaller number.
    if (pos >= text.size() || (text[pos] != ' ' && text[pos] != '\n')) return malformed;
    return st;
}

Result<std::string> read_proc_file(const std::string& path) {
    int fd;
    do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return fail_with("cannot open " + path + ": " + strerror(errno));
    std::string out;
    char buf[16384];
    while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int err = errno;
            ::close(fd);
            return fail_with("cannot read " + path + ": " + strerror(err));
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
}

Result<MemFigures> read_mem(int pid) {
    if (pid <= 0) return fail_with("no process " + std::to_string(pid));
    std::string base = "/proc/" + std::to_string(pid);
    if (auto text = read_proc_file(base + "/smaps_rollup")) return parse_smaps(*text);
    // smaps_rollup is missing on kernels before 4.14; for a process that is gone smaps fails too.
    auto text = read_proc_file(base + "/smaps");
    if (!text) return fail_with(text.error());
    return parse_smaps(*text);
}

Result<StatFigures> read_stat(int pid) {
    if (pid <= 0) return fail_with("no process " + std::to_string(pid));
    auto text = read_proc_file("/proc/" + std::to_string(pid) + "/stat");
    if (!text) return fail_with(text.error());
    return parse_stat(*text);
}

}  // namespace cowguard
