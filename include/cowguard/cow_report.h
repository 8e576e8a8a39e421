// The copy-on-write report: what this process copied from the master. Per kind of mapping,
// bytes still shared and bytes now private (from /proc/self/smaps); per type of frozen object
// (and per module for functions and classes), objects and bytes on pages now private (copied)
// versus still shared (from /proc/self/pagemap's exclusively-mapped bit). The walk over the
// frozen objects reads them only: no reference count or GC header is written.
#pragma once

#include <Python.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cowguard/result.h"

namespace cowguard::cow_report {

struct Counts {
    uint64_t objects = 0, bytes = 0;
    uint64_t private_objects = 0, private_bytes = 0;
    uint64_t shared_objects = 0, shared_bytes = 0;
    uint64_t unknown_objects = 0;  // page not present (swapped out)
};

struct Report {
    int pid = 0;
    double ms = 0;
    std::map<std::string, std::pair<uint64_t, uint64_t>> mappings;  // kind -> (shared, private) bytes
    Counts frozen;
    Counts code;  // the code objects of frozen functions (also in by_type as "code", not in frozen)
    std::vector<std::pair<std::string, Counts>> by_type;    // sorted by private bytes, descending
    std::vector<std::pair<std::string, Counts>> by_module;  // functions and classes
    std::optional<std::string> error;  // the report could not be made: why
};

// GIL held, in the interpreter to report on (the main one).
Report build();
std::string to_json(const Report& r, int worker_id, size_t top);
std::string summary(const Report& r, size_t top);
// The report as a Python dict (for cowguard.cow_report()).
PyObject* build_dict();
// Writes DIR/cow-<worker>-<pid>.json, mode 0600, never through a symlink and never over an
// existing file (an earlier report of this pid is replaced through a fresh file). The file's path,
// or an errno-style reason: nothing was written.
Result<std::string> write_file(const std::string& dir, int worker_id, const Report& r);

}  // namespace cowguard::cow_report
