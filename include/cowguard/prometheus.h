// cowguard's figures in Prometheus' text exposition format 0.0.4, from the same inputs as the
// stats document (the sampler's last round, the slots, the instance's top figures) plus uWSGI's
// own worker figures, which the glue copies out of its worker table as plain data.
// Pure: no uWSGI, no CPython.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cowguard/stats_doc.h"

namespace cowguard {

// uWSGI's figures of one worker, as its stats document shows them.
struct UwsgiWorkerFigures {
    uint64_t requests = 0;
    uint64_t respawns = 0;       // respawn_count
    std::string status = "idle";  // idle, busy, cheap, pause or sig (a signal handler is running)
};

struct ExposedProcess {
    enum class Kind { Worker, Mule, Spooler } kind = Kind::Worker;
    int id = 0;               // worker id, mule id or spooler index: the `worker` label
    ProcessFigures figures;   // memory series only when figures.mem_ok, GC series only when gc_ok
    bool has_uwsgi = false;   // workers: uWSGI's own figures below are exposed too
    UwsgiWorkerFigures uwsgi;
};

struct Exposition {
    std::string instance_name;  // the `instance_name` label of every series
    TopFigures top;             // version, freeze, master, totals, sampler (options are not exposed)
    std::vector<ExposedProcess> processes;
};

// The text format, version 0.0.4: one `# HELP` and one `# TYPE` line per family, then its samples;
// a family with no sample is left out. Names follow Prometheus' conventions: prefix `cowguard_`,
// base units (`_bytes`, `_seconds`), counters end in `_total`. Every series carries
// `instance_name`; per-process series add `kind` ("worker", "mule", "spooler") and `worker` (the id).
// Label values are made valid UTF-8 (see valid_utf8) and escaped (backslash, double quote,
// newline). Integers are written exactly; a non-finite double as NaN, +Inf or -Inf.
std::string render_prometheus(const Exposition& e);

// A label value as the format wants it between double quotes: `\` -> `\\`, `"` -> `\"`,
// newline -> `\n`, invalid UTF-8 bytes -> '?'.
std::string prometheus_label_value(std::string_view v);

// The `instance_name` when cowguard-instance-name is not given: for an Emperor's vassal (`vassal`),
// its config file's name without directory and extension, as uWSGI's %n gives it (the Emperor
// starts a vassal as `uwsgi [...] --ini|--xml|--yaml|--json|--config|--inherit NAME`, NAME maybe
// prefixed with exec:// or emperor://); else `procname` (uWSGI's procname-master or procname) when
// not empty; else "uwsgi".
std::string default_instance_name(const std::vector<std::string>& argv, bool vassal, const std::string& procname);

// The media type of render_prometheus' output.
constexpr const char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace cowguard
