// The `cowguard` Python module apps can import: stats() (this process's figures),
// cow_report() (what this process copied), django_warmup() (a ready warmup callable).
#pragma once

namespace cowguard {
struct Context;
}

namespace cowguard::pymodule {

// Must run before Py_Initialize (PyImport_AppendInittab), i.e. from the plugin's init hook.
// stats() reads ctx.slot (this process's figures; none in the master) and what
// cowguard-immortalize did (ctx.immortal_objects); `ctx` must outlive the interpreter.
void register_module(const Context& ctx);

}  // namespace cowguard::pymodule
