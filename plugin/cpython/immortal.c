/* See include/cowguard/immortal.h. One branch per CPython: each writes what that version's own
 * headers say makes an object immortal. */
#define Py_BUILD_CORE 1
#include <Python.h>

#if PY_VERSION_HEX >= 0x030E0000 && !defined(Py_GIL_DISABLED)
/* 3.14: refcount.h splits the field (ob_refcnt, ob_flags); _Py_SetImmortalUntracked (exported)
 * sets both, and _PyStackRef reads ob_flags' _Py_IMMORTAL_FLAGS to skip counting. Its sibling
 * _Py_SetImmortal would also unlink the object from the GC lists we are walking. */
#include "internal/pycore_object.h"
#endif

#include "cowguard/immortal.h"

#if PY_VERSION_HEX >= 0x030C0000 && !defined(Py_GIL_DISABLED)

int cowguard_immortal_supported(void) { return 1; }

int cowguard_make_immortal(PyObject* op) {
    if (_Py_IsImmortal(op)) return 0;
#if PY_VERSION_HEX >= 0x030E0000
    _Py_SetImmortalUntracked(op);
#else
    /* 3.12 and 3.13: object.h's _Py_IMMORTAL_REFCNT in the whole field, what their (hidden)
     * _Py_SetImmortalUntracked writes in a GIL build. */
    op->ob_refcnt = _Py_IMMORTAL_REFCNT;
#endif
    return 1;
}

#else /* 3.11 and earlier, or free-threaded: not supported */

int cowguard_immortal_supported(void) { return 0; }
int cowguard_make_immortal(PyObject* op) { (void)op; return 0; }

#endif
