// The copy-on-write report (see cow_report.h).
#include "cowguard/cow_report.h"
#include "cowguard/measure.h"

#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <unordered_map>
#include <unordered_set>

#include "cowguard/frozen_walk.h"
#include "cowguard/procfs.h"
#include "cowguard/smaps_vmas.h"

namespace cowguard::cow_report {

namespace {

constexpr uint64_t kPage = 4096;


// Reads /proc/self/pagemap a window of pages at a time: the frozen list is mostly in
// allocation order, so consecutive objects hit the same window; memory stays at 4 KB.
class Pagemap {
public:
    Pagemap() : fd_(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) {}
    ~Pagemap() {
        if (fd_ >= 0) close(fd_);
    }
    bool ok() const { return fd_ >= 0; }
    // 1: private (exclusively mapped), 0: shared, -1: unknown (not present, or read error)
    int status(uint64_t page) {
        if (page < base_ || page >= base_ + n_) {
            base_ = page;
            ssize_t r = pread(fd_, buf_, sizeof(buf_), static_cast<off_t>(page * 8));
            n_ = r > 0 ? static_cast<uint64_t>(r) / 8 : 0;
            if (!n_) return -1;
        }
        uint64_t e = buf_[page - base_];
        if (!pagemap_present(e)) return -1;
        return pagemap_exclusive(e) ? 1 : 0;
    }

private:
    int fd_;
    uint64_t base_ = 0, n_ = 0;
    uint64_t buf_[512];
};

struct WalkState {
    Pagemap pagemap;
    std::vector<Vma>* vmas;
    std::vector<bool> vma_has_objects;
    std::unordered_map<PyTypeObject*, Counts> by_type;
    std::unordered_map<std::string, Counts> by_module;
    Counts total;
    Counts code;                            // code objects of frozen functions (untracked: not in total)
    std::unordered_set<PyObject*> code_seen;  // a code object shared by several functions counts once
    size_t header;
    PyObject* module_key;
};

void add(Counts& c, uint64_t bytes, int status) {
    c.objects++;
    c.bytes += bytes;
    if (status == 1) {
        c.private_objects++;
        c.private_bytes += bytes;
    } else if (status == 0) {
        c.shared_objects++;
        c.shared_bytes += bytes;
    } else {
        c.unknown_objects++;
    }
}

// A str's text without creating or caching anything (PyUnicode_AsUTF8 would cache a copy
// inside the object, writing to it). Only compact ASCII strings qualify: module names are.
std::string peek_ascii(PyObject* s) {
    if (!s || !PyUnicode_Check(s) || !PyUnicode_IS_COMPACT_ASCII(s)) return "?";
    return std::string(static_cast<const char*>(PyUnicode_DATA(s)), static_cast<size_t>(PyUnicode_GET_LENGTH(s)));
}

// Size (with `header` bytes before the object) and page status of an object: an object spanning
// pages counts as copied if any of its pages was.
std::pair<uint64_t, int> place(WalkState* st, PyObject* op, size_t header) {
    PyTypeObject* tp = Py_TYPE(op);
    uint64_t size = static_cast<uint64_t>(tp->tp_basicsize);
    if (tp->tp_itemsize) {
        Py_ssize_t n = Py_SIZE(op);
        size += static_cast<uint64_t>(n < 0 ? -n : n) * static_cast<uint64_t>(tp->tp_itemsize);
    }
    size += header;
    uint64_t start = reinterpret_cast<uint64_t>(op) - header;
    int status = st->pagemap.status(start / kPage);
    for (uint64_t p = start / kPage + 1; status != 1 && p <= (start + size - 1) / kPage; p++)
        if (st->pagemap.status(p) == 1) status = 1;
    int vi = find_vma(*st->vmas, start);
    if (vi >= 0) st->vma_has_objects[static_cast<size_t>(vi)] = true;
    return {size, status};
}

// A frozen function's code object: not GC-tracked, so not in the frozen list, but its bytecode is
// where 3.11+ writes specialization caches and counters as the function runs.
void visit_code(WalkState* st, PyObject* fn) {
    PyObject* code = PyFunction_GET_CODE(fn);
    if (!code || !st->code_seen.insert(code).second) return;
    auto [size, status] = place(st, code, 0);
    add(st->code, size, status);
    add(st->by_type[Py_TYPE(code)], size, status);
}

void visit(void* ctx, PyObject* op) {
    auto* st = static_cast<WalkState*>(ctx);
    PyTypeObject* tp = Py_TYPE(op);
    auto [size, status] = place(st, op, st->header);
    add(st->total, size, status);
    add(st->by_type[tp], size, status);

    // Per module, for functions and classes.
    if (PyFunction_Check(op)) {
        add(st->by_module[peek_ascii(reinterpret_cast<PyFunctionObject*>(op)->func_module)], size, status);
        visit_code(st, op);
    } else if (PyType_Check(op)) {
        auto* t = reinterpret_cast<PyTypeObject*>(op);
        PyObject* mod = nullptr;
        if ((t->tp_flags & Py_TPFLAGS_HEAPTYPE) && t->tp_dict) mod = PyDict_GetItemWithError(t->tp_dict, st->module_key);
        if (PyErr_Occurred()) PyErr_Clear();
        std::string name;
        if (mod) {
            name = peek_ascii(mod);
        } else {
            const char* dot = strrchr(t->tp_name, '.');
            name = dot ? std::string(t->tp_name, static_cast<size_t>(dot - t->tp_name)) : "builtins";
        }
        add(st->by_module[name], size, status);
    }
}

template <typename Map, typename KeyFn>
std::vector<std::pair<std::string, Counts>> ranked(const Map& m, KeyFn key) {
    std::vector<std::pair<std::string, Counts>> v;
    for (const auto& [k, c] : m) v.emplace_back(key(k), c);
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        if (a.second.private_bytes != b.second.private_bytes) return a.second.private_bytes > b.second.private_bytes;
        return a.second.bytes > b.second.bytes;
    });
    return v;
}

json_t* counts_json(const Counts& c) {
    return json_pack("{sIsIsIsIsIsIsI}", "objects", (json_int_t)c.objects, "bytes", (json_int_t)c.bytes,
                     "private_objects", (json_int_t)c.private_objects, "private_bytes", (json_int_t)c.private_bytes,
                     "shared_objects", (json_int_t)c.shared_objects, "shared_bytes", (json_int_t)c.shared_bytes,
                     "unknown_objects", (json_int_t)c.unknown_objects);
}


}  // namespace

Report build() {
    Report r;
    r.pid = getpid();
    double t0 = mono_ms();
    std::vector<Vma> vmas;
    {
        auto text = read_proc_file("/proc/self/smaps");
        auto parsed = text ? parse_smaps_vmas(*text) : Result<std::vector<Vma>>(fail_with(text.error()));
        if (!parsed) {
            r.error = "cannot read /proc/self/smaps";
            return r;
        }
        vmas = std::move(*parsed);
    }
    WalkState st;
    if (!st.pagemap.ok()) {
        r.error = std::string("cannot open /proc/self/pagemap: ") + strerror(errno);
        return r;
    }
    st.vmas = &vmas;
    st.vma_has_objects.assign(vmas.size(), false);
    st.header = cowguard_gc_header_size();
    st.module_key = PyUnicode_InternFromString("__module__");
    cowguard_walk_frozen(visit, &st);
    Py_XDECREF(st.module_key);

    for (size_t i = 0; i < vmas.size(); i++) {
        auto& slot = r.mappings[mapping_kind_name(classify_vma(vmas[i], st.vma_has_objects[i]))];
        slot.first += vmas[i].shared;
        slot.second += vmas[i].private_;
    }
    r.frozen = st.total;
    r.code = st.code;
    r.by_type = ranked(st.by_type, [](PyTypeObject* t) { return std::string(t->tp_name); });
    r.by_module = ranked(st.by_module, [](const std::string& s) { return s; });
    r.ms = mono_ms() - t0;
    return r;
}

std::string to_json(const Report& r, int worker_id, size_t top) {
    json_t* doc = json_object();
    json_object_set_new(doc, "pid", json_integer(r.pid));
    json_object_set_new(doc, "worker", json_integer(worker_id));
    json_object_set_new(doc, "generated_at", json_integer(static_cast<json_int_t>(time(nullptr))));
    json_object_set_new(doc, "duration_ms", json_real(r.ms));
    if (r.error) json_object_set_new(doc, "error", json_string(r.error->c_str()));
    json_t* maps = json_object();
    for (const auto& [kind, sp] : r.mappings)
        json_object_set_new(maps, kind.c_str(), json_pack("{sIsI}", "shared", (json_int_t)sp.first, "private", (json_int_t)sp.second));
    json_object_set_new(doc, "mappings", maps);
    json_t* frozen = counts_json(r.frozen);
    auto list = [top](const std::vector<std::pair<std::string, Counts>>& v, const char* key) {
        json_t* a = json_array();
        for (size_t i = 0; i < v.size() && i < top; i++) {
            json_t* o = counts_json(v[i].second);
            json_object_set_new(o, key, json_string(v[i].first.c_str()));
            json_array_append_new(a, o);
        }
        return a;
    };
    json_object_set_new(frozen, "by_type", list(r.by_type, "type"));
    json_object_set_new(frozen, "by_module", list(r.by_module, "module"));
    json_object_set_new(doc, "frozen", frozen);
    json_object_set_new(doc, "code", counts_json(r.code));
    char* s = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    std::string out = s ? s : "{}";
    free(s);
    json_decref(doc);
    return out;
}

std::string summary(const Report& r, size_t top) {
    if (r.error) return "copy-on-write report failed: " + *r.error;
    std::string s = "frozen objects on copied pages: " + std::to_string(r.frozen.private_objects) + " (" +
                    mb_text(r.frozen.private_bytes) + ") of " + std::to_string(r.frozen.objects) + " (" + mb_text(r.frozen.bytes) +
                    "); top types:";
    for (size_t i = 0; i < r.by_type.size() && i < top; i++)
        s += (i ? ", " : " ") + r.by_type[i].first + " " + std::to_string(r.by_type[i].second.private_objects) + " (" +
             mb_text(r.by_type[i].second.private_bytes) + ")";
    s += "; code objects of frozen functions on copied pages: " + std::to_string(r.code.private_objects) + " (" +
         mb_text(r.code.private_bytes) + ") of " + std::to_string(r.code.objects);
    auto it = r.mappings.find("python_objects");
    if (it != r.mappings.end()) s += "; python object mappings " + mb_text(it->second.second) + " private / " + mb_text(it->second.first) + " shared";
    s += "; took " + std::to_string(static_cast<int>(r.ms)) + " ms";
    return s;
}

PyObject* build_dict() {
    Report r = build();
    std::string text = to_json(r, 0, 50);
    PyObject* json = PyImport_ImportModule("json");
    if (!json) return nullptr;
    PyObject* d = PyObject_CallMethod(json, "loads", "s", text.c_str());
    Py_DECREF(json);
    return d;
}

// Written under a temporary name and renamed: whoever waits for the report (the trigger's
// caller, a test, an operator's tool) sees all of it or none of it (a reader once found the file
// created and still empty), and rename() replaces a file or symlink at the path without
// following it; O_EXCL | O_NOFOLLOW keep the temporary name from being redirected.
Result<std::string> write_file(const std::string& dir, int worker_id, const Report& r) {
    const std::string path = dir + "/cow-" + std::to_string(worker_id) + "-" + std::to_string(r.pid) + ".json";
    const std::string tmp = path + ".tmp";
    const std::string text = to_json(r, worker_id, 50);
    unlink(tmp.c_str());  // left by a process that died while writing
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return fail_with(strerror(errno));
    ssize_t written = write(fd, text.data(), text.size());
    int write_errno = errno;
    close(fd);
    std::string error;
    if (written != static_cast<ssize_t>(text.size()))
        error = written < 0 ? strerror(write_errno) : "short write";
    else if (rename(tmp.c_str(), path.c_str()) != 0)
        error = strerror(errno);
    if (error.empty()) return path;
    unlink(tmp.c_str());
    return fail_with(error);
}

}  // namespace cowguard::cow_report
