// libFuzzer target: parse_smaps_vmas, classify_vma and find_vma on arbitrary text. Seeds:
// corpus/smaps_vmas/ (real /proc/PID/smaps of uWSGI workers and of this machine's processes).
// Built and run by tests/fuzz/run.sh (make fuzz).
//
// What must hold, whatever the input:
//   - parse_smaps_vmas() fails, or gives mappings sorted by start, each
//     with start < end and whole-kB shared/private figures;
//   - classify_vma() gives a named kind for every mapping, with and without frozen objects, and
//     the kinds the header promises for [heap], [stack...] and anonymous mappings;
//   - find_vma() answers -1 or the index of a mapping holding the address, for the boundaries of
//     every mapping and an address taken from the input; when no two mappings overlap (always so
//     in a real smaps) it finds exactly the mapping a linear search finds.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "cowguard/smaps_vmas.h"

using namespace cowguard;

namespace {

[[noreturn]] void fail(const char* what, uint64_t detail) {
    fprintf(stderr, "fuzz_smaps_vmas: %s (%llx)\n", what, static_cast<unsigned long long>(detail));
    abort();
}

int linear_find(const std::vector<Vma>& vmas, uint64_t addr) {
    for (size_t i = 0; i < vmas.size(); i++)
        if (vmas[i].start <= addr && addr < vmas[i].end) return static_cast<int>(i);
    return -1;
}

void check_lookup(const std::vector<Vma>& vmas, bool disjoint, uint64_t addr) {
    int i = find_vma(vmas, addr);
    if (i < -1 || i >= static_cast<int>(vmas.size())) fail("find_vma index out of range", addr);
    if (i >= 0 && !(vmas[i].start <= addr && addr < vmas[i].end)) fail("find_vma: mapping does not hold addr", addr);
    if (disjoint && i != linear_find(vmas, addr)) fail("find_vma differs from a linear search", addr);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = parse_smaps_vmas(text);
    if (!parsed) return 0;
    const std::vector<Vma>& vmas = *parsed;
    if (vmas.empty()) fail("success without mappings", 0);

    bool disjoint = true;
    for (size_t i = 0; i < vmas.size(); i++) {
        const Vma& v = vmas[i];
        if (!(v.start < v.end)) fail("start >= end", v.start);
        if (i > 0 && vmas[i - 1].start > v.start) fail("not sorted", v.start);
        if (i > 0 && vmas[i - 1].end > v.start) disjoint = false;
        if (v.shared % 1024 || v.private_ % 1024) fail("figures not whole kB", v.shared | v.private_);
        for (bool objects : {false, true}) {
            MappingKind k = classify_vma(v, objects);
            const char* name = mapping_kind_name(k);
            if (!name || !*name) fail("kind without a name", static_cast<uint64_t>(k));
            if (v.path == "[heap]" && k != MappingKind::MallocHeap) fail("[heap] not malloc_heap", v.start);
            if (v.path.rfind("[stack", 0) == 0 && k != MappingKind::Stacks) fail("[stack] not stacks", v.start);
            if (v.path.empty() && k != (objects ? MappingKind::PythonObjects : MappingKind::OtherAnonymous))
                fail("anonymous mapping kind", v.start);
            if (k == MappingKind::LibpythonData && v.path.find("libpython") == std::string::npos)
                fail("libpython_data without libpython", v.start);
        }
    }
    for (const Vma& v : vmas) {
        check_lookup(vmas, disjoint, v.start);
        check_lookup(vmas, disjoint, v.end - 1);
        check_lookup(vmas, disjoint, v.end);
        if (v.start) check_lookup(vmas, disjoint, v.start - 1);
    }
    uint64_t addr = 0;
    memcpy(&addr, data + size - (size < 8 ? size : 8), size < 8 ? size : 8);
    check_lookup(vmas, disjoint, addr);
    check_lookup(vmas, disjoint, 0);
    check_lookup(vmas, disjoint, UINT64_MAX);

    // Pagemap bits: pure bit tests, each independent of the others.
    if (!pagemap_present(addr | (1ULL << 63)) || pagemap_present(addr & ~(1ULL << 63))) fail("present bit", addr);
    if (!pagemap_swapped(addr | (1ULL << 62)) || pagemap_swapped(addr & ~(1ULL << 62))) fail("swapped bit", addr);
    if (!pagemap_exclusive(addr | (1ULL << 56)) || pagemap_exclusive(addr & ~(1ULL << 56))) fail("exclusive bit", addr);
    return 0;
}
