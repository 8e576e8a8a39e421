// Unit tests for include/cowguard/malloc_holes.h, against a simulated best-fit heap: free chunks
// below a top, each allocation taken from the smallest free chunk it fits in (split, the rest
// staying free), else from the top.
#include <cstdint>
#include <vector>

#include "cowguard/malloc_holes.h"

#include "run_suite.h"

using cowguard::holes::fill_heap;
using cowguard::holes::HeapAllocator;
using cowguard::holes::HeapFill;
using cowguard::holes::hole_sizes;

namespace {

class SimHeap : public HeapAllocator {
public:
    struct Chunk {
        uintptr_t at;
        size_t size;
    };
    SimHeap(std::vector<Chunk> free, uintptr_t top) : free_(std::move(free)), top_(top), top_start_(top) {}
    void* allocate(size_t size) override {
        calls++;
        if (fail_after && calls > fail_after) return nullptr;
        Chunk* best = nullptr;
        for (auto& c : free_)
            if (c.size >= size && (!best || c.size < best->size)) best = &c;
        if (!best) {
            uintptr_t p = top_;
            top_ += size;
            return reinterpret_cast<void*>(p);
        }
        uintptr_t p = best->at;
        best->at += size;
        best->size -= size;
        return reinterpret_cast<void*>(p);
    }
    bool from_top(void* p) override { return reinterpret_cast<uintptr_t>(p) >= top_start_; }
    size_t free_bytes() const {
        size_t n = 0;
        for (auto& c : free_) n += c.size;
        return n;
    }
    uint64_t calls = 0, fail_after = 0;

private:
    std::vector<Chunk> free_;
    uintptr_t top_, top_start_;
};

}  // namespace

START_TEST(sizes_are_powers_of_two_largest_first) {
    auto s = hole_sizes(64 * 1024, 16);
    ck_assert_uint_eq(s.size(), 13);
    ck_assert_uint_eq(s.front(), 65536);
    ck_assert_uint_eq(s.back(), 16);
    for (size_t i = 1; i < s.size(); i++) ck_assert_uint_eq(s[i] * 2, s[i - 1]);
    ck_assert_uint_eq(hole_sizes(16, 16).size(), 1);
}
END_TEST

START_TEST(bad_sizes_give_nothing) {
    ck_assert(hole_sizes(0, 16).empty());
    ck_assert(hole_sizes(64, 0).empty());
    ck_assert(hole_sizes(48, 16).empty());  // not a power of two
    ck_assert(hole_sizes(64, 24).empty());
    ck_assert(hole_sizes(16, 64).empty());  // min over max
}
END_TEST

START_TEST(every_free_chunk_is_taken_down_to_the_smallest_size) {
    // 3000 bytes and 100 bytes free, and 70 KB (over the largest size): all taken but what is
    // under 16 bytes
    SimHeap h({{0x1000, 3000}, {0x10000, 100}, {0x20000, 70 * 1024}}, 0x100000);
    std::vector<void*> held;
    HeapFill f = fill_heap(h, hole_sizes(64 * 1024, 16), 100000, 1 << 30, held);
    ck_assert_uint_lt(h.free_bytes(), 16 * 3);  // at most one remainder under 16 per chunk
    ck_assert_uint_eq(f.bytes + h.free_bytes(), 3000 + 100 + 70 * 1024);
    ck_assert_uint_eq(f.from_top, 13);  // one per size, none more
    ck_assert_uint_eq(held.size(), f.blocks + f.from_top);
}
END_TEST

START_TEST(no_free_chunk_takes_one_block_per_size_from_the_top) {
    SimHeap h({}, 0x100000);
    std::vector<void*> held;
    HeapFill f = fill_heap(h, hole_sizes(1024, 16), 100000, 1 << 30, held);
    ck_assert_uint_eq(f.blocks, 0);
    ck_assert_uint_eq(f.bytes, 0);
    ck_assert_uint_eq(f.from_top, 7);
    ck_assert_uint_eq(held.size(), 7);
}
END_TEST

START_TEST(bounded_and_stops_on_failure) {
    SimHeap h({{0x1000, 1 << 20}}, 0x1000000);
    std::vector<void*> held;
    HeapFill f = fill_heap(h, hole_sizes(16, 16), 100, 1 << 30, held);
    ck_assert_uint_eq(f.blocks, 100);
    SimHeap g({{0x1000, 1 << 20}}, 0x1000000);
    g.fail_after = 5;
    std::vector<void*> held2;
    f = fill_heap(g, hole_sizes(1024, 16), 100000, 1 << 30, held2);
    ck_assert_uint_eq(f.blocks, 5);
    ck_assert_uint_eq(held2.size(), 5);
    std::vector<void*> held3;
    f = fill_heap(g, {}, 100000, 1 << 30, held3);  // no sizes: nothing
    ck_assert_uint_eq(f.blocks + f.from_top, 0);
}
END_TEST

START_TEST(bounded_by_the_free_bytes_reported) {
    // A heap whose top is misjudged (every block looks like a hole): at most max_bytes are taken.
    class Blind : public SimHeap {
    public:
        Blind() : SimHeap({}, 0x100000) {}
        bool from_top(void*) override { return false; }
    } h;
    std::vector<void*> held;
    HeapFill f = fill_heap(h, hole_sizes(64 * 1024, 16), 1000000, 100000, held);
    ck_assert_uint_le(f.bytes, 100000);
    ck_assert_uint_ge(f.bytes, 100000 - 16);  // every size down to 16 filled what was left
    f = fill_heap(h, hole_sizes(64 * 1024, 16), 1000000, 0, held);
    ck_assert_uint_eq(f.blocks, 0);
}
END_TEST

int main() {
    Suite* suite = suite_create("malloc_holes");
    TCase* tc = tcase_create("all");
    tcase_add_test(tc, sizes_are_powers_of_two_largest_first);
    tcase_add_test(tc, bad_sizes_give_nothing);
    tcase_add_test(tc, every_free_chunk_is_taken_down_to_the_smallest_size);
    tcase_add_test(tc, no_free_chunk_takes_one_block_per_size_from_the_top);
    tcase_add_test(tc, bounded_and_stops_on_failure);
    tcase_add_test(tc, bounded_by_the_free_bytes_reported);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
