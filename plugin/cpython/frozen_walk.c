/* See include/cowguard/frozen_walk.h. Compiled as C: CPython 3.11's internal headers use C11
 * atomics that C++17 cannot parse.
 * Per version (read in each Debian's /usr/include/python3.X/internal): interp->gc.permanent_generation
 * is a PyGC_Head list on 3.11 and 3.13 (pycore_interp.h -> pycore_gc.h) and on 3.14 (the struct moved
 * to pycore_interp_structs.h, included by pycore_interp.h; the field kept its name through 3.14's
 * incremental GC and its revert). An object follows its PyGC_Head on all three (3.13+ name that
 * _Py_FROM_GC; 3.11 has no such helper). */
#define Py_BUILD_CORE 1
#include <Python.h>
#include "internal/pycore_gc.h"
#include "internal/pycore_interp.h"

#ifdef Py_GIL_DISABLED
/* Free-threaded builds keep no GC lists (objects are found through mimalloc's heaps): the walk
 * would silently see nothing. */
#error "cowguard's frozen walk needs a CPython built with the GIL"
#endif

#include "cowguard/frozen_walk.h"

size_t cowguard_walk_frozen(void (*visit)(void* ctx, PyObject* op), void* ctx) {
    PyInterpreterState* interp = PyInterpreterState_Get();
    PyGC_Head* head = &interp->gc.permanent_generation.head;
    size_t n = 0;
    /* The objects follow their headers: GC information is stored before the object. */
    for (PyGC_Head* g = _PyGCHead_NEXT(head); g != head; g = _PyGCHead_NEXT(g)) {
        visit(ctx, (PyObject*)(g + 1));
        n++;
    }
    return n;
}

size_t cowguard_gc_header_size(void) { return sizeof(PyGC_Head); }
