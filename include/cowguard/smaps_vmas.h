// Per-mapping view of /proc/PID/smaps for the copy-on-write report: which kind of memory each
// mapping is, and how much of it is still shared. Pure: no uWSGI, no CPython.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cowguard/result.h"

namespace cowguard {

struct Vma {
    uint64_t start = 0, end = 0;
    std::string perms;  // "rw-p"
    std::string path;   // "" for anonymous, "[heap]", "/usr/lib/.../libpython3.11.so.1.0", ...
    uint64_t shared = 0, private_ = 0;  // bytes (Shared_* and Private_* sums)
};

// Parses every mapping of a full /proc/PID/smaps text, in address order; an error on malformed text.
Result<std::vector<Vma>> parse_smaps_vmas(std::string_view text);

// The report's mapping kinds.
enum class MappingKind { PythonObjects, MallocHeap, LibpythonData, ExtensionData, Stacks, OtherAnonymous, Other };
const char* mapping_kind_name(MappingKind k);

// holds_python_objects: the walk found frozen objects inside this mapping (pymalloc arenas and
// large objects malloc placed in their own anonymous mappings).
MappingKind classify_vma(const Vma& v, bool holds_python_objects);

// Index of the mapping holding addr in a sorted vector, or -1.
int find_vma(const std::vector<Vma>& vmas, uint64_t addr);

// /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
inline bool pagemap_present(uint64_t e) { return (e >> 63) & 1; }
inline bool pagemap_swapped(uint64_t e) { return (e >> 62) & 1; }
inline bool pagemap_exclusive(uint64_t e) { return (e >> 56) & 1; }

}  // namespace cowguard
