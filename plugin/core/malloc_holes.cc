// See include/cowguard/malloc_holes.h.
#include "cowguard/malloc_holes.h"

namespace cowguard::holes {

std::vector<size_t> hole_sizes(size_t max_size, size_t min_size) {
    std::vector<size_t> out;
    auto pow2 = [](size_t v) { return v && !(v & (v - 1)); };
    if (!pow2(max_size) || !pow2(min_size) || min_size > max_size) return out;
    for (size_t s = max_size; s >= min_size; s /= 2) out.push_back(s);
    return out;
}

HeapFill fill_heap(HeapAllocator& a, const std::vector<size_t>& sizes, uint64_t max_blocks, uint64_t max_bytes,
                   std::vector<void*>& held) {
    HeapFill r;
    for (size_t size : sizes) {
        while (r.blocks < max_blocks && r.bytes + size <= max_bytes) {
            void* p = a.allocate(size);
            if (!p) return r;
            held.push_back(p);
            if (a.from_top(p)) {
                r.from_top++;
                break;
            }
            r.blocks++;
            r.bytes += size;
        }
    }
    return r;
}

}  // namespace cowguard::holes
