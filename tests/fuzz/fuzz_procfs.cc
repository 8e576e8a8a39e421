// libFuzzer target: parse_smaps and parse_stat on arbitrary text. Seeds: corpus/procfs/ (real
// /proc files of python and uWSGI processes, and broken variants), dictionary: procfs.dict. Built
// and run by tests/fuzz/run.sh (make fuzz).
//
// What must hold: a failed parse leaves `out` untouched; a successful one gives whole-kB figures
// (smaps) and a positive pid (stat).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cowguard/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);

    cowguard::MemFigures mem;
    mem.swap = 1;  // sentinel: not a multiple of 1024, so no successful parse leaves it
    if (!cowguard::parse_smaps(text, mem)) {
        if (mem.swap != 1 || mem.rss != 0) abort();
    } else {
        // Every figure comes from whole kB.
        const uint64_t figures[] = {mem.rss, mem.pss, mem.shared_clean, mem.shared_dirty, mem.private_clean,
                                    mem.private_dirty, mem.swap, mem.anonymous};
        for (uint64_t f : figures)
            if (f % 1024 != 0) abort();
    }

    cowguard::StatFigures stat;
    stat.pid = -7;  // sentinel
    bool parsed = cowguard::parse_stat(text, stat);
    if (parsed ? stat.pid <= 0 : stat.pid != -7) abort();
    return 0;
}
