// Fills the holes of the C allocator's heap (glibc malloc's free chunks below its top chunk) before
// the fork, as cowguard-fill-holes does for pymalloc's pools: a worker's allocations over pymalloc's
// 512 bytes would otherwise land in free chunks scattered between the master's live ones and copy
// those pages. Pure: the allocator is behind an interface (the Check suite simulates one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cowguard::holes {

class HeapAllocator {
public:
    virtual ~HeapAllocator() = default;
    virtual void* allocate(size_t size) = 0;
    // Whether p was carved from the top of the heap (fresh memory) rather than from a free chunk.
    virtual bool from_top(void* p) = 0;
};

struct HeapFill {
    uint64_t blocks = 0;  // taken from free chunks
    uint64_t bytes = 0;
    uint64_t from_top = 0;  // one per size tried at most: the allocation that found no free chunk left
};

// Sizes tried, largest first: powers of two from max_size down to min_size (both powers of two,
// min_size <= max_size; otherwise empty).
std::vector<size_t> hole_sizes(size_t max_size, size_t min_size);

// For each size, largest first, allocates until an allocation comes from the top (every free chunk
// that size fits in is taken; what a split leaves is a smaller free chunk, for the next sizes), or
// max_blocks are taken in all, or taking one more of this size would pass max_bytes (the free bytes
// the allocator reports: a heap whose top is misjudged costs at most that). Every pointer allocated
// is appended to `held`: never to be freed.
HeapFill fill_heap(HeapAllocator& a, const std::vector<size_t>& sizes, uint64_t max_blocks, uint64_t max_bytes,
                   std::vector<void*>& held);

}  // namespace cowguard::holes
