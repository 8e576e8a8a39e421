// Warmup callables (cowguard-warmup = module:callable), run in the master after the apps load
// and before the freeze, so what apps build lazily on their first requests is built once and
// shared. CPython side; call with the GIL held, in the interpreter the apps run in.
#pragma once

#include <string>
#include <vector>

namespace cowguard::warmup {

struct Result {
    bool ok = true;
    double ms = 0;
    std::string failed;  // the module:callable that raised (its traceback went to the log)
};

// Runs each callable in order; stops at the first failure when stop_on_error.
Result run(const std::vector<std::string>& callables, bool stop_on_error);

}  // namespace cowguard::warmup
