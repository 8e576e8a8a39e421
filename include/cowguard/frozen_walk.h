/* Walks the objects in the current interpreter's permanent GC generation (what gc.freeze()
 * moved there) without writing to them: only the GC header links are read. CPython keeps that
 * list in internal structures, so this one unit is C (CPython's internal headers are C-only). */
#pragma once

#include <Python.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Calls visit(ctx, op) for every frozen object; returns how many there were. GIL held. */
size_t cowguard_walk_frozen(void (*visit)(void* ctx, PyObject* op), void* ctx);

/* Bytes of the GC header that precedes every GC-tracked object. */
size_t cowguard_gc_header_size(void);

#ifdef __cplusplus
}
#endif
