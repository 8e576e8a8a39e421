// Reads the per-size-class table of CPython's small-object allocator report
// (_PyObject_DebugMallocStats, what sys._debugmallocstats() prints). Pure: takes the text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "cowguard/result.h"

namespace cowguard {

struct SizeClass {
    size_t size = 0;     // block size in bytes (the table's "size" column, never assumed 16-byte steps)
    uint64_t avail = 0;  // free blocks in the pools of this class that are in use
};

// The rows of the table under the header line "class   size   num pools   blocks in use  avail
// blocks", up to the first line that is not a row. An error when the header is missing, a row is
// malformed (not five unsigned integers), or a size is 0 or not increasing.
Result<std::vector<SizeClass>> parse_malloc_stats(std::string_view text);

}  // namespace cowguard
