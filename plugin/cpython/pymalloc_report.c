/* See include/cowguard/fill_holes.h: CPython's small-object allocator report, declared only in its
 * internal headers (all it takes is the FILE to write to). */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stdbool.h> /* 3.13's pycore_obmalloc.h uses bool without it */
#include <stdio.h>
#if PY_VERSION_HEX >= 0x030C0000
#include "internal/pycore_obmalloc.h"
#else
#include "internal/pycore_pymem.h"
#endif

int cowguard_write_malloc_stats(FILE* out) { return _PyObject_DebugMallocStats(out); }
