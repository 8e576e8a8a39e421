// Which process this is (the master, worker N, mule N, spooler N) and which shared slot it owns:
// the one place that knows the slot layout. Pure: the glue reads uWSGI's fields and asks here.
#pragma once

#include <string>

namespace cowguard {

enum class Role { Master, Worker, Mule, Spooler };

struct ProcessId {
    Role role = Role::Master;
    int id = 0;  // worker id (1..), mule id (1..), spooler index (0..); 0 for the master
    bool operator==(const ProcessId& o) const { return role == o.role && id == o.id; }
};

// From uWSGI's own fields: `mywid` (0 in the master), `muleid` (0 unless a mule), and the index of
// this spooler in uWSGI's spooler list (-1 unless a spooler).
ProcessId identify(int mywid, int muleid, int spooler_index);

const char* role_name(Role role);  // "master", "worker", "mule", "spooler"
std::string describe(ProcessId p);  // "worker 3", "mule 1", "spooler 0", "master"

// The slots, in shared memory: [0] the instance's (the master's flags: stop_instance),
// [1..workers] workers, then mules, then spoolers.
struct SlotLayout {
    int workers = 0, mules = 0, spoolers = 0;
    int count() const { return 1 + workers + mules + spoolers; }
    // The index of p's slot, or -1 when it has none (an id out of range; the master has slot 0).
    int index_of(ProcessId p) const;
};

}  // namespace cowguard
