// libFuzzer target: parse_smaps and parse_stat on arbitrary text. Seeds: corpus/procfs/ (real
// /proc files of python and uWSGI processes, and broken variants), dictionary: procfs.dict. Built
// and run by tests/fuzz/run.sh (make fuzz).
//
// What must hold: a successful parse gives whole-kB figures
// (smaps) and a positive pid (stat).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cowguard/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);

    if (auto parsed = cowguard::parse_smaps(text)) {
        const cowguard::MemFigures& mem = *parsed;
        // Every figure comes from whole kB.
        const uint64_t figures[] = {mem.rss, mem.pss, mem.shared_clean, mem.shared_dirty, mem.private_clean,
                                    mem.private_dirty, mem.swap, mem.anonymous};
        for (uint64_t f : figures)
            if (f % 1024 != 0) abort();
    }

    auto stat = cowguard::parse_stat(text);
    if (stat && stat->pid <= 0) abort();
    return 0;
}
