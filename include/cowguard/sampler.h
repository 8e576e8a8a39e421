// The master's sampler: reads /proc for every worker, mule and spooler on its own cadence and
// keeps the latest figures for the stats document, the metrics and the memory limits.
// Needs neither uWSGI nor CPython: the glue hands it the processes to look at.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cowguard/options.h"
#include "cowguard/procfs.h"
#include "cowguard/stats_doc.h"
#include "cowguard/worker_slot.h"

namespace cowguard {

struct ProcessRef {
    enum class Kind { Worker, Mule, Spooler } kind = Kind::Worker;
    int id = 0;                  // worker id, mule id, spooler index
    int pid = 0;                 // 0: not running
    WorkerSlot* slot = nullptr;  // its shared slot (may be null)
};

// What the limits decided for one process in one sampling round.
struct LimitAction {
    ProcessRef proc;
    bool evil = false;  // true: kill now (stuck in a request or not); false: recycle after its request
    std::string reason;  // "uss 612.0 MB > cowguard-reload-on-uss 500 MB"
};

struct Snapshot {
    std::map<int, ProcessFigures> workers;  // by pid
    std::map<int, ProcessFigures> mules;
    bool master_ok = false;
    MemFigures master;
    uint64_t pss_total = 0;
    double shared_fraction_avg = 0;
    uint64_t rounds = 0;
    double last_round_ms = 0;
};

// What the slot says about the process f.pid (GC figures, recycles, the peak private memory), when
// that process writes it: the one reading for the stats document, the exposition and the sampler.
void add_slot_figures(ProcessFigures& f, const WorkerSlot& slot);

class Sampler {
public:
    explicit Sampler(const Settings& settings) : settings_(settings) {}

    // One round: samples the master and every running process, updates each slot's memory
    // figures and peak, and returns the limit actions to take (the caller acts and logs).
    std::vector<LimitAction> sample(int master_pid, const std::vector<ProcessRef>& procs);

    Snapshot snapshot() const;

private:
    struct Window {  // recent (minflt, requests) pairs of one slot, for faults per request
        int pid = 0;
        std::deque<std::pair<uint64_t, uint64_t>> points;
    };
    // Minor faults per request over the recent window of this slot's process.
    double faults_per_request(const WorkerSlot* slot, int pid, uint64_t minflt, uint64_t requests);

    const Settings& settings_;
    mutable std::mutex mu_;
    Snapshot snap_;
    std::map<const WorkerSlot*, Window> windows_;
};

}  // namespace cowguard
