// Process roles and the slot layout (see process_role.h).
#include "cowguard/process_role.h"

namespace cowguard {

ProcessId identify(int mywid, int muleid, int spooler_index) {
    if (muleid > 0) return {Role::Mule, muleid};
    if (spooler_index >= 0) return {Role::Spooler, spooler_index};
    if (mywid > 0) return {Role::Worker, mywid};
    return {Role::Master, 0};
}

const char* role_name(Role role) {
    switch (role) {
        case Role::Worker: return "worker";
        case Role::Mule: return "mule";
        case Role::Spooler: return "spooler";
        case Role::Master: break;
    }
    return "master";
}

std::string describe(ProcessId p) {
    if (p.role == Role::Master) return "master";
    return std::string(role_name(p.role)) + " " + std::to_string(p.id);
}

int SlotLayout::index_of(ProcessId p) const {
    switch (p.role) {
        case Role::Master: return 0;
        case Role::Worker: return p.id >= 1 && p.id <= workers ? p.id : -1;
        case Role::Mule: return p.id >= 1 && p.id <= mules ? workers + p.id : -1;
        case Role::Spooler: return p.id >= 0 && p.id < spoolers ? 1 + workers + mules + p.id : -1;
    }
    return -1;
}

}  // namespace cowguard
