// Unit tests for include/cowguard/smaps_vmas.h: per-mapping smaps parsing, classification of
// mappings into the copy-on-write report's kinds, find_vma, and the pagemap bit helpers.
//
// Fixtures (tests/unit/fixtures):
//   vmas_smaps.txt            /proc/self/smaps of a uWSGI 2.0.21 worker (Debian 12, kernel 6.x,
//                             `uwsgi --master --plugin python3 --workers 1`), read by the worker
//                             itself inside a request of an app that had imported _decimal and
//                             built `DATA = [[i] for i in range(100000)]`. At that moment:
//                             id(DATA) = 0x7f0ef0c00d00, id(DATA[500]) = 0x7f0ef0c08740 (both in the
//                             anonymous mapping 7f0ef0300000-7f0ef0e00000, pymalloc arenas) and
//                             id(_decimal.Decimal) = 0x7f0ef38330a0 (a static type, in _decimal's
//                             rw-p mapping). 171 mappings.
//   vmas_smaps_truncated.txt  its first 235 lines, then "Private_Dirty:      " with no value
//                             (cut inside the arena mapping's Private_Dirty line).
// The figures asserted below are read off these exact files: recapturing one means updating them.
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cowguard/smaps_vmas.h"

// Last: it brings check.h, whose fail() macro breaks <ios> and friends.
#include "fixture.h"
#include "run_suite.h"

using cowguard::MappingKind;
using cowguard::Vma;

namespace {

constexpr uint64_t KB = 1024;

const std::vector<Vma>& capture() {
    static std::vector<Vma> vmas = [] {
        std::vector<Vma> v;
        if (!into(cowguard::parse_smaps_vmas(fixture("vmas_smaps.txt")), v)) ck_abort_msg("vmas_smaps.txt did not parse");
        return v;
    }();
    return vmas;
}

// The index of the mapping that starts at `start` in the capture (aborts when there is none).
int at(uint64_t start) {
    const auto& v = capture();
    for (size_t i = 0; i < v.size(); i++)
        if (v[i].start == start) return static_cast<int>(i);
    ck_abort_msg("no mapping starts at %llx", static_cast<unsigned long long>(start));
    return -1;
}

const Vma& vma_at(uint64_t start) { return capture()[static_cast<size_t>(at(start))]; }

MappingKind kind(const Vma& v, bool objects) { return cowguard::classify_vma(v, objects); }

// A failed parse must leave the output alone.
bool vmas_fail(const std::string& text) {
    std::vector<Vma> out(3);
    out[0].start = 4242;
    return !into(cowguard::parse_smaps_vmas(text), out) && out.size() == 3 && out[0].start == 4242;
}

const char* kLibpython = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0";
const char* kDecimal = "/usr/lib/python3.11/lib-dynload/_decimal.cpython-311-x86_64-linux-gnu.so";

}  // namespace

// ---- parse_smaps_vmas on the real capture ---------------------------------------------------

START_TEST(capture_every_mapping_in_order) {
    const auto& v = capture();
    ck_assert_uint_eq(v.size(), 171);
    for (size_t i = 1; i < v.size(); i++) {
        ck_assert(v[i - 1].start < v[i].start);
        ck_assert(v[i - 1].end <= v[i].start);  // mappings never overlap
    }
    for (const auto& m : v) ck_assert(m.start < m.end);
    // The first line: the uwsgi binary's first (read-only) segment.
    ck_assert_uint_eq(v.front().start, 0x5603f6904000ULL);
    ck_assert_uint_eq(v.front().end, 0x5603f692e000ULL);
    ck_assert_str_eq(v.front().perms.c_str(), "r--p");
    ck_assert_str_eq(v.front().path.c_str(), "/usr/bin/uwsgi-core");
    ck_assert_str_eq(v.back().path.c_str(), "[vsyscall]");
    // Sums of Shared_Clean + Shared_Dirty and Private_Clean + Private_Dirty over every mapping.
    uint64_t shared = 0, priv = 0;
    for (const auto& m : v) {
        shared += m.shared;
        priv += m.private_;
    }
    ck_assert_uint_eq(shared, 21925888);
    ck_assert_uint_eq(priv, 2297856);
}
END_TEST

START_TEST(capture_per_mapping_figures) {
    // 7f0ef0300000-7f0ef0e00000 rw-p (pymalloc arenas): Shared_Dirty 10756, Private_Dirty 492 kB.
    const Vma& arenas = vma_at(0x7f0ef0300000ULL);
    ck_assert_uint_eq(arenas.end, 0x7f0ef0e00000ULL);
    ck_assert_str_eq(arenas.perms.c_str(), "rw-p");
    ck_assert_str_eq(arenas.path.c_str(), "");  // "... 00:00 0 " then end of line
    ck_assert_uint_eq(arenas.shared, 10756 * KB);
    ck_assert_uint_eq(arenas.private_, 492 * KB);
    const Vma& heap = vma_at(0x56040a4c9000ULL);
    ck_assert_str_eq(heap.path.c_str(), "[heap]");
    ck_assert_uint_eq(heap.shared, 749568);
    ck_assert_uint_eq(heap.private_, 417792);
    const Vma& stack = vma_at(0x7ffd54e21000ULL);
    ck_assert_str_eq(stack.path.c_str(), "[stack]");
    ck_assert_uint_eq(stack.shared, 28672);
    ck_assert_uint_eq(stack.private_, 16384);
    const Vma& libpython_rw = vma_at(0x7f0ef1422000ULL);
    ck_assert_str_eq(libpython_rw.path.c_str(), kLibpython);
    ck_assert_str_eq(libpython_rw.perms.c_str(), "rw-p");
    ck_assert_uint_eq(libpython_rw.shared, 716800);
    ck_assert_uint_eq(libpython_rw.private_, 589824);
    const Vma& decimal_rw = vma_at(0x7f0ef3831000ULL);
    ck_assert_str_eq(decimal_rw.path.c_str(), kDecimal);
    ck_assert_uint_eq(decimal_rw.shared, 12288);
    ck_assert_uint_eq(decimal_rw.private_, 0);
    // uWSGI's shared memory areas: "/dev/zero (deleted)", a path with a space in it.
    const Vma& shm = vma_at(0x7f0ef3834000ULL);
    ck_assert_str_eq(shm.perms.c_str(), "rw-s");
    ck_assert_str_eq(shm.path.c_str(), "/dev/zero (deleted)");
}
END_TEST

START_TEST(parse_replaces_the_output) {
    std::vector<Vma> out(5);
    std::string text = fixture("vmas_smaps.txt");
    ck_assert(into(cowguard::parse_smaps_vmas(text), out));
    ck_assert_uint_eq(out.size(), 171);
    ck_assert(into(cowguard::parse_smaps_vmas(text), out));
    ck_assert_uint_eq(out.size(), 171);
}
END_TEST

START_TEST(parse_sorts_and_reads_hand_made_text) {
    // Out of order, a path with spaces, a header with nothing after the inode, CRLF-free
    // minimal mappings, the hugetlb and other keys ignored.
    const char* text =
        "7f0000002000-7f0000003000 rw-p 00000000 00:00 0\n"
        "Private_Dirty:         4 kB\n"
        "Private_Hugetlb:    2048 kB\n"
        "7f0000000000-7f0000002000 rw-p 00001000 fe:00 42                 /opt/my app/ext.cpython-311-x86_64-linux-gnu.so\n"
        "Shared_Clean:          4 kB\n"
        "Shared_Dirty:          4 kB\n"
        "Shared_Hugetlb:     2048 kB\n"
        "Private_Clean:         0 kB\n"
        "Rss:                  99 kB\n"
        "VmFlags: rd wr mr mw me ac sd\n";
    std::vector<Vma> v;
    ck_assert(into(cowguard::parse_smaps_vmas(text), v));
    ck_assert_uint_eq(v.size(), 2);
    ck_assert_uint_eq(v[0].start, 0x7f0000000000ULL);
    ck_assert_uint_eq(v[0].end, 0x7f0000002000ULL);
    ck_assert_str_eq(v[0].path.c_str(), "/opt/my app/ext.cpython-311-x86_64-linux-gnu.so");
    ck_assert_uint_eq(v[0].shared, 8 * KB);
    ck_assert_uint_eq(v[0].private_, 0);
    ck_assert_str_eq(v[1].path.c_str(), "");
    ck_assert_uint_eq(v[1].shared, 0);
    ck_assert_uint_eq(v[1].private_, 4 * KB);
    ck_assert(kind(v[0], false) == MappingKind::ExtensionData);
    ck_assert(kind(v[1], true) == MappingKind::PythonObjects);
}
END_TEST

// ---- classify_vma -----------------------------------------------------------------------------

START_TEST(classify_heap_and_stack) {
    // The brk heap is malloc's, whether or not the walk found frozen objects in it.
    ck_assert(kind(vma_at(0x56040a4c9000ULL), false) == MappingKind::MallocHeap);
    ck_assert(kind(vma_at(0x56040a4c9000ULL), true) == MappingKind::MallocHeap);
    ck_assert(kind(vma_at(0x7ffd54e21000ULL), false) == MappingKind::Stacks);
    Vma thread_stack;
    thread_stack.perms = "rw-p";
    thread_stack.path = "[stack:1234]";  // older kernels name thread stacks
    ck_assert(kind(thread_stack, false) == MappingKind::Stacks);
}
END_TEST

START_TEST(classify_libpython) {
    // Only the writable segment of libpython is its data; the other four are read-only file pages.
    ck_assert(kind(vma_at(0x7f0ef1422000ULL), false) == MappingKind::LibpythonData);
    for (uint64_t start : {0x7f0ef0e00000ULL, 0x7f0ef0f03000ULL, 0x7f0ef11d4000ULL, 0x7f0ef13f2000ULL}) {
        const Vma& v = vma_at(start);
        ck_assert_str_eq(v.path.c_str(), kLibpython);
        ck_assert(v.perms[1] == '-');
        ck_assert(kind(v, false) == MappingKind::Other);
    }
}
END_TEST

START_TEST(classify_extension) {
    // _decimal's rw-p segment (holding its static types, id(_decimal.Decimal) among them).
    ck_assert(kind(vma_at(0x7f0ef3831000ULL), false) == MappingKind::ExtensionData);
    // Its read-only and executable segments are Other.
    for (uint64_t start : {0x7f0ef37e7000ULL, 0x7f0ef37ed000ULL, 0x7f0ef3820000ULL, 0x7f0ef3830000ULL}) {
        const Vma& v = vma_at(start);
        ck_assert_str_eq(v.path.c_str(), kDecimal);
        ck_assert(kind(v, false) == MappingKind::Other);
    }
    // Other shared libraries' writable data counts as extension data too ("name.so.N" included).
    const Vma& libstdcxx_rw = vma_at(0x7f0ef1814000ULL);
    ck_assert_str_eq(libstdcxx_rw.path.c_str(), "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30");
    ck_assert(kind(libstdcxx_rw, false) == MappingKind::ExtensionData);
}
END_TEST

START_TEST(classify_anonymous) {
    const Vma& arenas = vma_at(0x7f0ef0300000ULL);
    ck_assert(kind(arenas, true) == MappingKind::PythonObjects);
    ck_assert(kind(arenas, false) == MappingKind::OtherAnonymous);
    // libpython's .bss right after its data segment: anonymous, so it follows the same rule.
    const Vma& bss = vma_at(0x7f0ef1561000ULL);
    ck_assert_str_eq(bss.path.c_str(), "");
    ck_assert(kind(bss, false) == MappingKind::OtherAnonymous);
    ck_assert(kind(bss, true) == MappingKind::PythonObjects);
}
END_TEST

START_TEST(classify_other) {
    // Read-only file mappings, private or shared.
    const Vma& libc_ro = vma_at(0x7f0ef3a72000ULL);
    ck_assert_str_eq(libc_ro.perms.c_str(), "r--p");
    ck_assert(kind(libc_ro, false) == MappingKind::Other);
    const Vma& locale = vma_at(0x7f0ef42ec000ULL);
    ck_assert_str_eq(locale.path.c_str(), "/usr/lib/locale/C.utf8/LC_CTYPE");
    ck_assert(kind(locale, false) == MappingKind::Other);
    const Vma& gconv = vma_at(0x7f0ef42e5000ULL);
    ck_assert_str_eq(gconv.perms.c_str(), "r--s");
    ck_assert(kind(gconv, false) == MappingKind::Other);
    // Writable file mappings that are no shared library: the executable's data, uWSGI's
    // /dev/zero shared memory.
    const Vma& exe_rw = vma_at(0x5603f69d9000ULL);
    ck_assert_str_eq(exe_rw.perms.c_str(), "rw-p");
    ck_assert(kind(exe_rw, false) == MappingKind::Other);
    ck_assert(kind(vma_at(0x7f0ef3834000ULL), false) == MappingKind::Other);
    // Kernel-provided mappings.
    int specials = 0;
    for (const auto& v : capture())
        if (v.path == "[vvar]" || v.path == "[vvar_vclock]" || v.path == "[vdso]" || v.path == "[vsyscall]") {
            ck_assert(kind(v, false) == MappingKind::Other);
            specials++;
        }
    ck_assert_int_eq(specials, 4);
    // Every read-only named mapping of the capture (files and kernel mappings; it has no
    // anonymous read-only one) is Other, whatever the walk says.
    int read_only = 0;
    for (const auto& v : capture())
        if (v.perms[1] != 'w') {
            ck_assert(!v.path.empty());
            ck_assert(kind(v, false) == MappingKind::Other);
            ck_assert(kind(v, true) == MappingKind::Other);
            read_only++;
        }
    ck_assert_int_eq(read_only, 98);
}
END_TEST

START_TEST(kind_names) {
    ck_assert_str_eq(cowguard::mapping_kind_name(MappingKind::PythonObjects), "python_objects");
    ck_assert_str_eq(cowguard::mapping_kind_name(MappingKind::MallocHeap), "malloc_heap");
    ck_assert_str_eq(cowguard::mapping_kind_name(MappingKind::LibpythonData), "libpython_data");
    ck_assert_str_eq(cowguard::mapping_kind_name(MappingKind::ExtensionData), "extension_data");
    ck_assert_str_eq(cowguard::mapping_kind_name(MappingKind::Stacks), "stacks");
    ck_assert_str_eq(cowguard::mapping_kind_name(MappingKind::OtherAnonymous), "other_anonymous");
    ck_assert_str_eq(cowguard::mapping_kind_name(MappingKind::Other), "other");
}
END_TEST

// ---- find_vma ---------------------------------------------------------------------------------

START_TEST(find_vma_objects_of_the_capture) {
    const auto& v = capture();
    int arenas = at(0x7f0ef0300000ULL);
    ck_assert_int_eq(cowguard::find_vma(v, 0x7f0ef0c00d00ULL), arenas);  // id(DATA)
    ck_assert_int_eq(cowguard::find_vma(v, 0x7f0ef0c08740ULL), arenas);  // id(DATA[500])
    ck_assert_int_eq(cowguard::find_vma(v, 0x7f0ef38330a0ULL), at(0x7f0ef3831000ULL));  // id(_decimal.Decimal)
}
END_TEST

START_TEST(find_vma_boundaries) {
    const auto& v = capture();
    // Start inclusive, end exclusive: the arenas end where libpython's first segment starts.
    int arenas = at(0x7f0ef0300000ULL), libpython = at(0x7f0ef0e00000ULL);
    ck_assert_int_eq(libpython, arenas + 1);
    ck_assert_int_eq(cowguard::find_vma(v, 0x7f0ef0300000ULL), arenas);
    ck_assert_int_eq(cowguard::find_vma(v, 0x7f0ef0dfffffULL), arenas);
    ck_assert_int_eq(cowguard::find_vma(v, 0x7f0ef0e00000ULL), libpython);
    // A gap: the executable's bss ends at 5603f69e7000, the heap starts at 56040a4c9000.
    int bss = at(0x5603f69e4000ULL), heap = at(0x56040a4c9000ULL);
    ck_assert_uint_eq(v[static_cast<size_t>(bss)].end, 0x5603f69e7000ULL);
    ck_assert_int_eq(cowguard::find_vma(v, 0x5603f69e6fffULL), bss);
    ck_assert_int_eq(cowguard::find_vma(v, 0x5603f69e7000ULL), -1);
    ck_assert_int_eq(cowguard::find_vma(v, 0x56040a4c8fffULL), -1);
    ck_assert_int_eq(cowguard::find_vma(v, 0x56040a4c9000ULL), heap);
    // Before the first mapping, after the last, and nothing to search.
    ck_assert_int_eq(cowguard::find_vma(v, 0), -1);
    ck_assert_int_eq(cowguard::find_vma(v, 0x5603f6903fffULL), -1);
    ck_assert_int_eq(cowguard::find_vma(v, 0x5603f6904000ULL), 0);
    ck_assert_int_eq(cowguard::find_vma(v, v.back().end - 1), static_cast<int>(v.size()) - 1);
    ck_assert_int_eq(cowguard::find_vma(v, v.back().end), -1);
    ck_assert_int_eq(cowguard::find_vma(v, UINT64_MAX), -1);
    ck_assert_int_eq(cowguard::find_vma({}, 0x1000), -1);
    // Every mapping's first and last byte finds it.
    for (size_t i = 0; i < v.size(); i++) {
        ck_assert_int_eq(cowguard::find_vma(v, v[i].start), static_cast<int>(i));
        ck_assert_int_eq(cowguard::find_vma(v, v[i].end - 1), static_cast<int>(i));
    }
}
END_TEST

// ---- malformed and empty text -----------------------------------------------------------------

START_TEST(empty_and_malformed) {
    ck_assert(vmas_fail(""));
    ck_assert(vmas_fail("\n\n\n"));
    ck_assert(vmas_fail(fixture("vmas_smaps_truncated.txt")));
    // A field before any mapping header.
    ck_assert(vmas_fail("Shared_Clean:  4 kB\n7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n"));
    // A line that is neither a header nor "Key: value".
    ck_assert(vmas_fail("7f0000000000-7f0000001000 rw-p 00000000 00:00 0\ngarbage\n"));
    // Bad or missing sizes in the fields that are summed.
    const std::string head = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n";
    ck_assert(vmas_fail(head + "Shared_Clean: x kB\n"));
    ck_assert(vmas_fail(head + "Shared_Dirty:\n"));
    ck_assert(vmas_fail(head + "Private_Clean:    -4 kB\n"));
    ck_assert(vmas_fail(head + "Private_Dirty: 99999999999999999999999 kB\n"));  // overflows bytes
    // A header alone is a mapping with nothing resident.
    std::vector<Vma> one;
    ck_assert(into(cowguard::parse_smaps_vmas(head), one));
    ck_assert_uint_eq(one.size(), 1);
    ck_assert_uint_eq(one[0].shared + one[0].private_, 0);
    // A range that is not one (start >= end, not hex) is not taken for a header.
    ck_assert(vmas_fail("7f0000001000-7f0000001000 rw-p 00000000 00:00 0\n"));
    ck_assert(vmas_fail("7f000000zz00-7f0000001000 rw-p 00000000 00:00 0\n"));
}
END_TEST

// ---- pagemap bits -----------------------------------------------------------------------------

START_TEST(pagemap_bits) {
    ck_assert(!cowguard::pagemap_present(0));
    ck_assert(!cowguard::pagemap_swapped(0));
    ck_assert(!cowguard::pagemap_exclusive(0));
    ck_assert(cowguard::pagemap_present(1ULL << 63));
    ck_assert(!cowguard::pagemap_swapped(1ULL << 63));
    ck_assert(!cowguard::pagemap_exclusive(1ULL << 63));
    ck_assert(cowguard::pagemap_swapped(1ULL << 62));
    ck_assert(!cowguard::pagemap_present(1ULL << 62));
    ck_assert(cowguard::pagemap_exclusive(1ULL << 56));
    ck_assert(!cowguard::pagemap_present(1ULL << 56));
    // The neighbouring bits (55 soft-dirty, 57 uffd-wp, 61 file/shared, PFN bits) mean nothing here.
    uint64_t noise = (1ULL << 55) | (1ULL << 57) | (1ULL << 61) | 0x007fffffffffffffULL;
    ck_assert(!cowguard::pagemap_present(noise) && !cowguard::pagemap_swapped(noise));
    ck_assert(!cowguard::pagemap_exclusive(noise & ~(1ULL << 56)));
    uint64_t all = ~0ULL;
    ck_assert(cowguard::pagemap_present(all) && cowguard::pagemap_swapped(all) && cowguard::pagemap_exclusive(all));
}
END_TEST

namespace {
uint64_t pagemap_entry(const void* addr) {
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ~0ULL;
    uint64_t e = 0;
    off_t off = static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / static_cast<uintptr_t>(getpagesize()) * 8);
    ssize_t r = pread(fd, &e, sizeof(e), off);
    close(fd);
    return r == sizeof(e) ? e : ~0ULL;
}
}  // namespace

START_TEST(pagemap_bits_on_a_real_page) {
    // What the report relies on: a page written by the only process mapping it is present and
    // exclusive; after fork() the child sees it present but shared, until it writes (copies) it.
    size_t page = static_cast<size_t>(getpagesize());
    auto* p = static_cast<volatile char*>(mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ck_assert(p != MAP_FAILED);
    uint64_t e = pagemap_entry(const_cast<char*>(p));
    ck_assert(e != ~0ULL);
    ck_assert(!cowguard::pagemap_present(e));  // never touched
    p[0] = 1;
    e = pagemap_entry(const_cast<char*>(p));
    ck_assert(cowguard::pagemap_present(e));
    ck_assert(cowguard::pagemap_exclusive(e));
    ck_assert(!cowguard::pagemap_swapped(e));
    pid_t child = fork();
    ck_assert(child >= 0);
    if (child == 0) {
        int code = 0;
        uint64_t c = pagemap_entry(const_cast<char*>(p));
        if (!cowguard::pagemap_present(c) || cowguard::pagemap_exclusive(c)) code |= 1;
        p[0] = 2;  // copy-on-write
        c = pagemap_entry(const_cast<char*>(p));
        if (!cowguard::pagemap_present(c) || !cowguard::pagemap_exclusive(c)) code |= 2;
        _exit(code);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status));
    ck_assert_msg(WEXITSTATUS(status) == 0, "child saw wrong pagemap bits (code %d: 1 = before its write, 2 = after)",
                  WEXITSTATUS(status));
    ck_assert_int_eq(p[0], 1);
    munmap(const_cast<char*>(p), page);
}
END_TEST

int main() {
    Suite* suite = suite_create("smaps_vmas");
    TCase* parse = tcase_create("parse_smaps_vmas");
    tcase_add_test(parse, capture_every_mapping_in_order);
    tcase_add_test(parse, capture_per_mapping_figures);
    tcase_add_test(parse, parse_replaces_the_output);
    tcase_add_test(parse, parse_sorts_and_reads_hand_made_text);
    tcase_add_test(parse, empty_and_malformed);
    suite_add_tcase(suite, parse);
    TCase* classify = tcase_create("classify_vma");
    tcase_add_test(classify, classify_heap_and_stack);
    tcase_add_test(classify, classify_libpython);
    tcase_add_test(classify, classify_extension);
    tcase_add_test(classify, classify_anonymous);
    tcase_add_test(classify, classify_other);
    tcase_add_test(classify, kind_names);
    suite_add_tcase(suite, classify);
    TCase* find = tcase_create("find_vma");
    tcase_add_test(find, find_vma_objects_of_the_capture);
    tcase_add_test(find, find_vma_boundaries);
    suite_add_tcase(suite, find);
    TCase* pagemap = tcase_create("pagemap");
    tcase_add_test(pagemap, pagemap_bits);
    tcase_add_test(pagemap, pagemap_bits_on_a_real_page);
    suite_add_tcase(suite, pagemap);

    return run_suite(suite);
}
