/* See include/cowguard/frozen_walk.h. Compiled as C: CPython 3.11's internal headers use C11
 * atomics that C++17 cannot parse. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include "internal/pycore_gc.h"
#include "internal/pycore_interp.h"

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
