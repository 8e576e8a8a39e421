// cowguard-immortalize: after the freeze, every object of the permanent generation and every
// untracked object reachable from one becomes immortal, so a worker that reads the fork-time heap
// no longer writes reference counts into its pages (Py_INCREF/Py_DECREF skip immortal objects).
//
// What is reached, from each frozen object:
//   - what its tp_traverse visits (as gc.get_referents), recursively through untracked objects
//     (str, bytes, int, float, untracked tuples and dicts, code objects, ...);
//   - the keys of dicts (dict_traverse skips str keys: they cannot make cycles);
//   - code objects' co_consts, co_names, co_localsplusnames, co_localspluskinds, co_filename,
//     co_name, co_qualname, co_linetable, co_exceptiontable (code has no tp_traverse);
//   - heap types' ht_name, ht_qualname, ht_slots (type_traverse skips them).
// Not reached: objects held only by C statics or interpreter state and by no frozen object (for
// instance strings only the intern table holds; names only the type attribute cache holds are
// freed before the fork: holes::release_type_caches), code objects' lazily built co_code/co_varnames
// caches, and tracked objects made after the freeze. Tracked objects are never recursed into:
// the frozen ones are walked by the main loop, younger ones are not the fork's.
//
// Not done: precomputing str hashes and type version tags (CinderX's immortalize_heap does both).
// Measured on the Django bench project (3.13, 4 workers): 30.6k strs without a hash on 4.1k pages
// and 1.6k types without a tag, yet private memory per worker moved less than run-to-run noise
// with it (8.27, 8.43 MB) or without (8.15, 8.70 MB).
//
// `keep_mortal`: objects C code reuses and mutates only while it holds the one reference
// (uWSGI's per-core WSGI argument tuple, refilled with PyTuple_SetItem, which refuses a tuple whose
// count is not 1): they are neither made immortal nor walked through.
//
// Every function must be called with the GIL held. The walk of one interpreter is one call that
// runs no Python code and allocates no Python object, so no other thread runs during it; between
// interpreters (and after the freeze) others may: they only add young objects, which are skipped.
#pragma once

#include <Python.h>

#include <cstdint>
#include <vector>

namespace cowguard::immortal {

struct Immortalized {
    uint64_t objects = 0;    // made immortal here: frozen + untracked
    uint64_t frozen = 0;     // of those, in the permanent generation
    double ms = 0;
};

// Whether this build's Python can do it (3.12+, not free-threaded).
bool supported();

// `interps`: the app interpreters, main first (as gc::freeze_all takes them).
Immortalized immortalize_all(const std::vector<PyThreadState*>& interps, const std::vector<PyObject*>& keep_mortal);

}  // namespace cowguard::immortal
