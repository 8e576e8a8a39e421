// Whether the CPython running in this uWSGI is the one cowguard was compiled against.
// Pure: the glue passes Py_GetVersion() and PY_MAJOR_VERSION/PY_MINOR_VERSION.
#pragma once

#include "cowguard/result.h"

namespace cowguard {

// Ok when `runtime` (Py_GetVersion()'s text, e.g. "3.11.2 (main, ...) [GCC 12.2.0]") is the
// built major.minor; otherwise the one log line that explains the refusal. 3.1 is not 3.11, and
// text that does not start with a version is refused too.
Status check_python_version(int built_major, int built_minor, const char* runtime);

}  // namespace cowguard
