// libFuzzer target: the Prometheus endpoint's two text paths on arbitrary bytes. The input is both
// a request head for metrics_route() and the instance name (plus a label in a worker's status) for
// render_prometheus(). Seeds: corpus/prometheus/ (real scrape requests of Prometheus 2.42, curl,
// a browser; broken variants), dictionary: prometheus.dict. Built and run by tests/fuzz/run.sh.
//
// What must hold: metrics_route answers 200, 400, 404 or 405, and 200 only for a head whose
// request line names /metrics; the exposition is valid UTF-8, every line is a `# HELP`, a
// `# TYPE` or a sample of a `cowguard_` family ending in a value, and every label value is closed
// (the escaping keeps a quote, a backslash or a newline of the name inside its label).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cowguard/prometheus.h"
#include "cowguard/stats_server.h"

namespace {

// Walks one sample line's labels as the text format reads them; false on a malformed one.
bool labels_closed(std::string_view line) {
    size_t i = line.find('{');
    if (i == std::string_view::npos) return false;
    i++;
    while (i < line.size() && line[i] != '}') {
        size_t eq = line.find("=\"", i);
        if (eq == std::string_view::npos) return false;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; j++) {
            if (line[j] != '\\') continue;
            j++;
            if (j >= line.size() || (line[j] != '\\' && line[j] != '"' && line[j] != 'n')) return false;
        }
        if (j >= line.size()) return false;
        i = j + 1;
        if (i < line.size() && line[i] == ',') i++;
    }
    return i + 2 < line.size() && line[i] == '}' && line[i + 1] == ' ' &&
           line.find(' ', i + 2) == std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);

    cowguard::MetricsRoute r = cowguard::metrics_route(text);
    if (r.status != 200 && r.status != 400 && r.status != 404 && r.status != 405) abort();
    std::string_view line = text.substr(0, text.find('\n'));
    if (r.status == 200 && line.find("/metrics") == std::string_view::npos) abort();
    if (r.head_only && (r.status != 200 || line.rfind("HEAD ", 0) != 0)) abort();

    cowguard::Exposition e;
    e.instance_name = std::string(text);
    e.top.version = std::string(text.substr(0, 16));
    cowguard::ExposedProcess p;
    p.figures.mem_ok = p.figures.gc_ok = size % 2 == 0;
    p.has_uwsgi = true;
    p.uwsgi.status = std::string(text.substr(0, 8));
    e.processes.push_back(p);
    std::string out = cowguard::render_prometheus(e);
    if (cowguard::valid_utf8(out) != out) abort();
    size_t pos = 0;
    while (pos < out.size()) {
        size_t eol = out.find('\n', pos);
        if (eol == std::string::npos) abort();  // the last line ends with a newline too
        std::string_view l(out.data() + pos, eol - pos);
        pos = eol + 1;
        if (l.rfind("# HELP cowguard_", 0) == 0 || l.rfind("# TYPE cowguard_", 0) == 0) continue;
        if (l.rfind("cowguard_", 0) != 0 || !labels_closed(l)) abort();
    }
    return 0;
}
