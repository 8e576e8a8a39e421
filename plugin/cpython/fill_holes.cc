// Fills the holes of pymalloc's pools in use before the fork. See include/cowguard/fill_holes.h.
#include <Python.h>

#include "cowguard/fill_holes.h"
#include "cowguard/gc_control.h"
#include "cowguard/measure.h"

#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cowguard/malloc_holes.h"
#include "cowguard/malloc_stats.h"

namespace cowguard::holes {

namespace {

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#define COWGUARD_GLIBC_HEAP 1
// glibc's main arena is one brk() segment: [break - arena, break - top chunk) holds its live and
// free chunks, the top chunk ends at the break. A block outside that range came from the top (or
// from an mmap), not from a free chunk.
class GlibcHeap : public HeapAllocator {
public:
    GlibcHeap() { bounds(); }
    void* allocate(size_t size) override { return malloc(size); }
    bool from_top(void* p) override {
        auto a = reinterpret_cast<uintptr_t>(p);
        bool hole = a >= lo_ && a < top_;
        if (!hole) bounds();  // the top moved
        return !hole;
    }
    uint64_t free_chunks() const { return free_chunks_; }
    uint64_t free_bytes() const { return free_bytes_; }

private:
    void bounds() {
        struct mallinfo2 mi = mallinfo2();
        auto brk_end = reinterpret_cast<uintptr_t>(sbrk(0));
        lo_ = brk_end - mi.arena;
        top_ = brk_end - mi.keepcost;
        free_chunks_ = mi.ordblks + mi.smblks;
        free_bytes_ = mi.fordblks > mi.keepcost ? mi.fordblks - mi.keepcost : 0;  // free, not counting the top
    }
    uintptr_t lo_ = 0, top_ = 0;
    uint64_t free_chunks_ = 0, free_bytes_ = 0;
};
#endif

}  // namespace

// Under pymalloc's 512 bytes the C heap holds C structures, not objects; over 64 KB glibc may map
// the block (mmap threshold 128 KB): a free chunk that large is taken in 64 KB pieces.
constexpr size_t kHeapMaxBlock = 64 * 1024, kHeapMinBlock = 16;

HeapFilled fill_heap(HeldBlocks& held) {
    HeapFilled r;
#ifdef COWGUARD_GLIBC_HEAP
    double t0 = mono_ms();
    GlibcHeap heap;
    auto sizes = hole_sizes(kHeapMaxBlock, kHeapMinBlock);
    // every free chunk splits into at most one block per size
    uint64_t max_blocks = (heap.free_chunks() + 1) * sizes.size();
    held.heap.reserve(max_blocks + sizes.size());
    HeapFill f = holes::fill_heap(heap, sizes, max_blocks, heap.free_bytes(), held.heap);
    r.blocks = f.blocks;
    r.bytes = f.bytes;
    r.ms = mono_ms() - t0;
#else
    r.skipped = "not glibc malloc";
#endif
    return r;
}

void release_type_caches(const std::vector<PyThreadState*>& interps) {
    for (PyThreadState* ts : interps) {
        gc::InterpreterScope scope(ts);
        PyType_ClearCache();
    }
}

Filled fill(HeldBlocks& held) {
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
    held.pymalloc.reserve(held.pymalloc.size() + total);  // glibc's heap, not pymalloc's: reserved before taking blocks
    // One class after the other, each of its pools in use filled before a new pool is opened:
    // pymalloc serves a size from the pools in use of its class first.
    for (const SizeClass& c : *table) {
        for (uint64_t i = 0; i < c.avail; i++) {
            void* p = PyObject_Malloc(c.size);
            if (!p) break;
            held.pymalloc.push_back(p);
            r.blocks++;
            r.bytes += c.size;
        }
    }
    r.ms = mono_ms() - t0;
    return r;
}

}  // namespace cowguard::holes
