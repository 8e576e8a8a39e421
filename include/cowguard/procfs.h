// Reading a process's memory and fault counters from /proc. Pure: no uWSGI, no CPython.
// The parsers take the file's text so the unit tests and the fuzzer can feed captured or
// hand-made files; the read_* functions do the I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "cowguard/result.h"

namespace cowguard {

struct MemFigures {  // all bytes
    uint64_t rss = 0, pss = 0, shared_clean = 0, shared_dirty = 0, private_clean = 0, private_dirty = 0, swap = 0,
             anonymous = 0;
    uint64_t uss() const { return private_clean + private_dirty; }
    uint64_t shared() const { return shared_clean + shared_dirty; }
};

// Parses the text of /proc/PID/smaps_rollup, or of /proc/PID/smaps (summing every mapping).
// The file gives kB; the figures are bytes. An error when the text has
// no "Rss:" line, when a line is neither a mapping header nor "Key: ...", or when a field this
// function uses has a malformed value ("Rss: abc kB", no "kB", overflow).
// Pss summed over a full smaps is a little below smaps_rollup's: the kernel rounds each mapping's
// Pss down to whole kB, while the rollup rounds once.
Result<MemFigures> parse_smaps(std::string_view text);

struct StatFigures {
    int pid = 0;
    char state = 0;
    uint64_t minflt = 0, majflt = 0, utime_ticks = 0, stime_ticks = 0, vsize = 0 /*bytes*/, rss_pages = 0;
};

// Parses /proc/PID/stat. The comm field (2nd) is in parentheses and may itself contain spaces
// and ')', so the fields are read from after the LAST ')'. An error on malformed text or text
// truncated before the rss field (the 24th) ends.
Result<StatFigures> parse_stat(std::string_view text);

// Reads /proc/<pid>/smaps_rollup, falling back to /proc/<pid>/smaps on kernels without it
// (before 4.14). An error if the process is gone or the file is unreadable or unparsable.
Result<MemFigures> read_mem(int pid);
Result<StatFigures> read_stat(int pid);

// Reads a whole small /proc file with plain open/read (no stdio buffering surprises).
// The error names the path and errno's text.
Result<std::string> read_proc_file(const std::string& path);

}  // namespace cowguard
