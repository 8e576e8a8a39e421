// The `cowguard` Python module apps can import: stats() (this process's figures),
// cow_report() (what this process copied), django_warmup() (a ready warmup callable).
#pragma once

#include <cstdint>

#include "cowguard/worker_slot.h"

namespace cowguard::pymodule {

// Must run before Py_Initialize (PyImport_AppendInittab), i.e. from the plugin's init hook.
void register_module();

// Where stats() reads this process's figures (nullptr in the master).
void set_slot(const WorkerSlot* slot);

// What cowguard-immortalize did before the fork (stats() reports it in every process).
void set_immortalized(uint64_t objects, double ms);

}  // namespace cowguard::pymodule
