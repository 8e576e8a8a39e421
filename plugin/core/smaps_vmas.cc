// Per-mapping smaps parsing and classification (see smaps_vmas.h).
#include "cowguard/smaps_vmas.h"

#include <algorithm>
#include <cstdlib>

namespace cowguard {

namespace {

bool hex_range(std::string_view s, uint64_t& a, uint64_t& b) {
    size_t dash = s.find('-');
    if (dash == std::string_view::npos || dash == 0 || dash + 1 >= s.size()) return false;
    auto parse = [](std::string_view h, uint64_t& out) {
        if (h.empty() || h.size() > 16) return false;
        uint64_t v = 0;
        for (char c : h) {
            int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
            if (d < 0) return false;
            v = v * 16 + static_cast<uint64_t>(d);
        }
        out = v;
        return true;
    };
    return parse(s.substr(0, dash), a) && parse(s.substr(dash + 1), b) && a < b;
}

bool kb_value(std::string_view rest, uint64_t& out) {
    size_t i = 0;
    while (i < rest.size() && rest[i] == ' ') i++;
    uint64_t v = 0;
    size_t digits = 0;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') {
        if (v > (UINT64_MAX / 1024 - 9) / 10) return false;
        v = v * 10 + static_cast<uint64_t>(rest[i] - '0');
        i++;
        digits++;
    }
    if (!digits) return false;
    out = v * 1024;
    return true;
}

bool ends_with(const std::string& s, const char* suffix) {
    size_t n = std::char_traits<char>::length(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

Result<std::vector<Vma>> parse_smaps_vmas(std::string_view text) {
    const Error malformed = fail_with("not smaps text");
    std::vector<Vma> vmas;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        std::string_view line = text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
        pos = eol == std::string_view::npos ? text.size() : eol + 1;
        if (line.empty()) continue;
        size_t sp = line.find(' ');
        uint64_t a, b;
        if (sp != std::string_view::npos && hex_range(line.substr(0, sp), a, b)) {
            // "start-end perms offset dev inode   path"
            Vma v;
            v.start = a;
            v.end = b;
            std::string_view rest = line.substr(sp + 1);
            size_t f = 0;
            for (int field = 0; field < 4; field++) {
                size_t next = rest.find(' ', f);
                if (next == std::string_view::npos) {
                    f = rest.size();
                    break;
                }
                if (field == 0) v.perms = std::string(rest.substr(f, next - f));
                f = next + 1;
            }
            while (f < rest.size() && rest[f] == ' ') f++;
            v.path = std::string(rest.substr(f));
            vmas.push_back(std::move(v));
            continue;
        }
        size_t colon = line.find(':');
        if (colon == std::string_view::npos || vmas.empty()) return malformed;
        std::string_view key = line.substr(0, colon);
        uint64_t val;
        if (key == "Shared_Clean" || key == "Shared_Dirty") {
            if (!kb_value(line.substr(colon + 1), val)) return malformed;
            vmas.back().shared += val;
        } else if (key == "Private_Clean" || key == "Private_Dirty") {
            if (!kb_value(line.substr(colon + 1), val)) return malformed;
            vmas.back().private_ += val;
        }
    }
    if (vmas.empty()) return malformed;
    std::sort(vmas.begin(), vmas.end(), [](const Vma& x, const Vma& y) { return x.start < y.start; });
    return vmas;
}

const char* mapping_kind_name(MappingKind k) {
    switch (k) {
        case MappingKind::PythonObjects: return "python_objects";
        case MappingKind::MallocHeap: return "malloc_heap";
        case MappingKind::LibpythonData: return "libpython_data";
        case MappingKind::ExtensionData: return "extension_data";
        case MappingKind::Stacks: return "stacks";
        case MappingKind::OtherAnonymous: return "other_anonymous";
        case MappingKind::Other: return "other";
    }
    return "other";
}

MappingKind classify_vma(const Vma& v, bool holds_python_objects) {
    if (v.path == "[heap]") return MappingKind::MallocHeap;  // brk heap: malloc, objects > 512 bytes included
    if (v.path.rfind("[stack", 0) == 0) return MappingKind::Stacks;
    bool writable = v.perms.size() > 1 && v.perms[1] == 'w';
    if (v.path.empty()) return holds_python_objects ? MappingKind::PythonObjects : MappingKind::OtherAnonymous;
    if (v.path[0] == '/' && writable) {
        // A library replaced on disk under a running process shows as "path (deleted)".
        std::string path = ends_with(v.path, " (deleted)") ? v.path.substr(0, v.path.size() - 10) : v.path;
        if (path.find("libpython") != std::string::npos) return MappingKind::LibpythonData;
        if (ends_with(path, ".so") || path.find(".so.") != std::string::npos) return MappingKind::ExtensionData;
    }
    return MappingKind::Other;
}

int find_vma(const std::vector<Vma>& vmas, uint64_t addr) {
    auto it = std::upper_bound(vmas.begin(), vmas.end(), addr, [](uint64_t a, const Vma& v) { return a < v.start; });
    if (it == vmas.begin()) return -1;
    --it;
    return addr < it->end ? static_cast<int>(it - vmas.begin()) : -1;
}

}  // namespace cowguard
