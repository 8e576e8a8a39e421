/* Making an object immortal, by the mechanism of the CPython cowguard was built against: the
 * only CPython-internal lines of the immortalization (the walk itself is in immortalize.cc and
 * uses the public C API). Compiled as C: 3.14's internal headers are C-only. */
#pragma once

#include <Python.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build's CPython has immortal objects (3.12 and later, GIL builds); 0 otherwise,
 * and the two functions below must not be called. */
int cowguard_immortal_supported(void);

/* Makes op immortal unless it already is; returns 1 when it changed op, 0 when it already was.
 * Never untracks op from the GC (frozen objects stay in the permanent generation). GIL held. */
int cowguard_make_immortal(PyObject* op);

#ifdef __cplusplus
}
#endif
