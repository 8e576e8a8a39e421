// Fills the holes of pymalloc's pools in use before the fork. See include/cowguard/fill_holes.h.
#include <Python.h>

#include "cowguard/fill_holes.h"
#include "cowguard/measure.h"

#include <cstdlib>
#include <ctime>
#include <vector>

#include "cowguard/malloc_stats.h"

namespace cowguard::holes {

namespace {

// The blocks taken: never freed (a freed block would be a hole again); kept reachable here.
std::vector<void*> g_held;

}  // namespace

Filled fill() {
    Filled r;
    double t0 = mono_ms();
    char* buf = nullptr;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) {
        r.skipped = "open_memstream failed";
        return r;
    }
    int in_use = cowguard_write_malloc_stats(f);
    fclose(f);
    std::string text(buf ? buf : "", len);
    free(buf);
    if (!in_use) {
        r.skipped = "pymalloc is not in use (PYTHONMALLOC)";
        return r;
    }
    auto table = parse_malloc_stats(text);
    if (!table) {
        r.skipped = "the allocator's report was not readable";
        return r;
    }
    uint64_t total = 0;
    for (const SizeClass& c : *table) total += c.avail;
    g_held.reserve(g_held.size() + total);  // glibc's heap, not pymalloc's: reserved before taking blocks
    // One class after the other, each of its pools in use filled before a new pool is opened:
    // pymalloc serves a size from the pools in use of its class first.
    for (const SizeClass& c : *table) {
        for (uint64_t i = 0; i < c.avail; i++) {
            void* p = PyObject_Malloc(c.size);
            if (!p) break;
            g_held.push_back(p);
            r.blocks++;
            r.bytes += c.size;
        }
    }
    r.ms = mono_ms() - t0;
    return r;
}

}  // namespace cowguard::holes
