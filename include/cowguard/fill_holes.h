// cowguard-fill-holes: the collection before the freeze frees objects scattered through pymalloc's
// pools; a worker would put its own new objects into those holes and so copy pages of the shared
// heap. Right before the fork the master takes every free block of every pool in use (as many
// blocks of each size class as _PyObject_DebugMallocStats reports "avail"), and keeps them for
// its lifetime: the workers' new objects then land on fresh pools. Measured on the Django bench
// project, 4 workers: 17.0 -> 16.0 MB private per worker on 3.11, 12.2 -> 10.0 MB on 3.13 with
// the immortal heap. No-op without pymalloc
// (PYTHONMALLOC=malloc). fill_heap() does the same for glibc malloc's free chunks (malloc_holes.h).
#pragma once

#include <Python.h>

#include <cstdint>
#include <string>
#include <vector>

#ifdef __cplusplus
extern "C" {
#endif
#include <stdio.h>
/* _PyObject_DebugMallocStats(out): 0 when pymalloc is not in use. GIL held. (pymalloc_report.c) */
int cowguard_write_malloc_stats(FILE* out);
#ifdef __cplusplus
}
#endif

namespace cowguard::holes {

struct Filled {
    uint64_t blocks = 0;  // blocks taken
    uint64_t bytes = 0;
    double ms = 0;
    std::string skipped;  // why nothing was taken, when so
};

// The blocks the fills take: never freed (a freed block would be a hole again), so they stay
// reachable here for the process's lifetime (in the Context).
struct HeldBlocks {
    std::vector<void*> pymalloc;
    std::vector<void*> heap;  // fill_heap()'s, apart: growing `pymalloc` would free its old buffer (a hole)
};

// Before fill(), in the master, GIL held: clears every interpreter's type attribute cache
// (PyType_ClearCache). Each entry holds a reference to the name it caches, and names built at run
// time (Django's getattr(node, "as_" + vendor)) are not interned: that reference is their only one,
// so the immortal walk does not reach them. A worker whose lookup reuses the entry would free the
// name, writing its pool page; cleared here, the names die in the master and fill() takes their
// blocks. Measured on the Django bench project, 3.14, 4 workers: 7.22 -> 6.89 MB private per worker.
void release_type_caches(const std::vector<PyThreadState*>& interps);

// In the master, GIL held, right before the fork: one call that runs no Python code.
Filled fill(HeldBlocks& held);

// glibc malloc's free chunks below its top chunk, after fill() (whose own list is on that heap).
struct HeapFilled {
    uint64_t blocks = 0, bytes = 0;
    double ms = 0;
    std::string skipped;
};
HeapFilled fill_heap(HeldBlocks& held);

}  // namespace cowguard::holes
