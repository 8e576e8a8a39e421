// The startup check that cowguard runs under the CPython it was built for: its hooks use that
// version's C API and internal structures (the GC's permanent generation, thread states).
#include "cowguard/python_version.h"

#include <cstdio>
#include <cstring>

namespace cowguard {

Status check_python_version(int built_major, int built_minor, const char* runtime) {
    char built[32];
    snprintf(built, sizeof(built), "%d.%d", built_major, built_minor);
    std::string seen = runtime ? std::string(runtime, strcspn(runtime, " ")) : std::string();
    size_t n = strlen(built);
    // "3.11" matches "3.11" and "3.11.2", not "3.110" nor "3.1".
    bool same = seen.compare(0, n, built) == 0 && (seen.size() == n || seen[n] == '.' || seen[n] == '+');
    if (same) return {};
    if (seen.empty()) seen = "an unknown version";
    return fail_with(std::string("built for Python ") + built + " but this uWSGI runs Python " + seen +
                     ": rebuild cowguard against that Python (make build)");
}

}  // namespace cowguard
