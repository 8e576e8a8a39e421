// Immortalizes the frozen heap. See include/cowguard/immortalize.h; the CPython-internal lines
// are in immortal.c.
#include "cowguard/immortalize.h"
#include "cowguard/measure.h"

#include <algorithm>
#include <ctime>

#include "cowguard/frozen_walk.h"
#include "cowguard/gc_control.h"
#include "cowguard/immortal.h"

namespace cowguard::immortal {

namespace {

struct Walk {
    std::vector<PyObject*> pending;  // made immortal, referents not walked yet
    std::vector<PyObject*> keep_mortal;  // sorted
    Result r;

    bool kept_mortal(PyObject* op) const {
        return !keep_mortal.empty() && std::binary_search(keep_mortal.begin(), keep_mortal.end(), op);
    }
};

// A referent: made immortal and queued unless it is GC-tracked (see the header) or already immortal,
// which is also what marks it as seen.
void reach(PyObject* op, Walk& w) {
    if (!op || (PyObject_IS_GC(op) && PyObject_GC_IsTracked(op)) || w.kept_mortal(op)) return;
    if (!cowguard_make_immortal(op)) return;
    w.r.objects++;
    w.pending.push_back(op);
}

int visit_referent(PyObject* op, void* arg) {
    reach(op, *static_cast<Walk*>(arg));
    return 0;
}

void walk_referents(PyObject* op, Walk& w) {
    PyTypeObject* type = Py_TYPE(op);
    // PyObject_IS_GC, not the type's flag: static types have type's tp_traverse but no GC header.
    if (type->tp_traverse && PyObject_IS_GC(op)) type->tp_traverse(op, visit_referent, &w);
    if (PyDict_Check(op)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(op, &pos, &key, &value)) reach(key, w);
    } else if (PyCode_Check(op)) {
        PyCodeObject* co = reinterpret_cast<PyCodeObject*>(op);
        for (PyObject* field : {co->co_consts, co->co_names, co->co_localsplusnames, co->co_localspluskinds,
                                co->co_filename, co->co_name, co->co_qualname, co->co_linetable, co->co_exceptiontable})
            reach(field, w);
    } else if (PyType_Check(op) && PyType_HasFeature(reinterpret_cast<PyTypeObject*>(op), Py_TPFLAGS_HEAPTYPE)) {
        PyHeapTypeObject* ht = reinterpret_cast<PyHeapTypeObject*>(op);
        for (PyObject* field : {ht->ht_name, ht->ht_qualname, ht->ht_slots}) reach(field, w);
    }
}

void visit_frozen(void* ctx, PyObject* op) {
    Walk& w = *static_cast<Walk*>(ctx);
    if (w.kept_mortal(op)) return;
    if (cowguard_make_immortal(op)) {
        w.r.objects++;
        w.r.frozen++;
    }
    // Its referents even when it already was immortal (an object CPython made so itself): its
    // untracked referents may not be.
    w.pending.push_back(op);
    while (!w.pending.empty()) {
        PyObject* next = w.pending.back();
        w.pending.pop_back();
        walk_referents(next, w);
    }
}

}  // namespace

bool supported() { return cowguard_immortal_supported() != 0; }

Result immortalize_all(const std::vector<PyThreadState*>& interps, const std::vector<PyObject*>& keep_mortal) {
    Walk w;
    w.keep_mortal = keep_mortal;
    std::sort(w.keep_mortal.begin(), w.keep_mortal.end());
    double t0 = mono_ms();
    if (supported()) {
        for (PyThreadState* ts : interps) {
            gc::InterpreterScope scope(ts);
            cowguard_walk_frozen(visit_frozen, &w);
        }
    }
    w.r.ms = mono_ms() - t0;
    return w.r;
}

}  // namespace cowguard::immortal
