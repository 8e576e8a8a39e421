// libFuzzer target: parse_smaps and parse_stat on arbitrary text. Seeds: corpus/procfs/.
// Build and run from the repository root:
//   clang++ -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c++17 -Iinclude \
//       tests/fuzz/fuzz_procfs.cc plugin/procfs.cc -o /tmp/fuzz_procfs
//   mkdir -p /tmp/fuzz_procfs.corpus && /tmp/fuzz_procfs -max_total_time=20 /tmp/fuzz_procfs.corpus tests/fuzz/corpus/procfs
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cowguard/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);

    cowguard::MemFigures mem;
    if (cowguard::parse_smaps(text, mem)) {
        // Every figure comes from whole kB.
        const uint64_t figures[] = {mem.rss, mem.pss, mem.shared_clean, mem.shared_dirty, mem.private_clean,
                                    mem.private_dirty, mem.swap, mem.anonymous};
        for (uint64_t f : figures)
            if (f % 1024 != 0) abort();
    }

    cowguard::StatFigures stat;
    if (cowguard::parse_stat(text, stat) && stat.pid <= 0) abort();
    return 0;
}
