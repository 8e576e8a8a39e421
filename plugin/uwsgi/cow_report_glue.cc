// uWSGI glue for the copy-on-write report: written by each worker at exit into
// cowguard-cow-report's directory, and on demand for every worker at once through a uWSGI
// signal (cowguard-cow-report-signal), raised by touching DIR/trigger or by uwsgi.signal(N).
#include <Python.h>

extern "C" {
#include <uwsgi.h>
}

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "cowguard/cow_report.h"
#include "cowguard/glue.h"

extern struct uwsgi_server uwsgi;

namespace cowguard::glue {

namespace {

void write_report(const char* why) {
    const std::string& dir = context().settings.cow_report_dir;
    cow_report::Report r = cow_report::build();
    Result<std::string> written = cow_report::write_file(dir, uwsgi.mywid, r);
    if (!written)
        log_line("worker %d (pid %d): cannot write the copy-on-write report into %s: %s", uwsgi.mywid,
                 static_cast<int>(getpid()), dir.c_str(), written.error().c_str());
    else
        log_line("worker %d (pid %d) %s: %s -> %s", uwsgi.mywid, static_cast<int>(getpid()), why,
                 cow_report::summary(r, 5).c_str(), written->c_str());
}

// Called by the python plugin's signal handler, in the worker, with the GIL held.
PyObject* on_signal(PyObject*, PyObject*) {
    write_report("copy-on-write report on signal");
    Py_RETURN_NONE;
}

PyMethodDef g_signal_def = {"cowguard_cow_report_signal", on_signal, METH_VARARGS,
                            "Writes this worker's copy-on-write report (cowguard-cow-report-signal)."};

}  // namespace

void cow_report_check_dir() {
    const Settings& st = context().settings;
    if (st.cow_report_dir.empty()) return;
    const std::string where = "cowguard-cow-report: '" + printable(st.cow_report_dir) + "' ";
    const std::string uid = " (uid " + std::to_string(geteuid()) + ")";
    struct stat sb;
    int rc = lstat(st.cow_report_dir.c_str(), &sb);
    if (rc != 0 && errno != ENOENT && errno != ENOTDIR)
        fail(where + "cannot be reached by this process" + uid + ": " + strerror(errno));
    if (rc != 0 || !S_ISDIR(sb.st_mode)) fail(where + "is not a directory (a symlink is refused too); create it first");
    if (access(st.cow_report_dir.c_str(), W_OK | X_OK) != 0)
        fail(where + "is not writable by this process" + uid + "; reports could not be written");
}

void cow_report_setup_master() {
    const Settings& st = context().settings;
    if (st.cow_report_dir.empty()) return;
    if (!uwsgi.master_process) {
        log_line("cowguard-cow-report: reports are written at exit; the on-demand signal needs master = true");
        return;
    }
    PyObject* handler = PyCFunction_New(&g_signal_def, nullptr);  // kept for the life of the process
    if (!handler || uwsgi_register_signal(static_cast<uint8_t>(st.cow_report_signal), const_cast<char*>("workers"),
                                          handler, static_cast<uint8_t>(context().python.modifier))) {
        fail("cowguard-cow-report-signal: cannot register uWSGI signal " + std::to_string(st.cow_report_signal) +
             " (already taken?): pick another one");
    }
    std::string trigger = st.cow_report_dir + "/trigger";
    int fd = open(trigger.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
    if (fd < 0 || uwsgi_add_file_monitor(static_cast<uint8_t>(st.cow_report_signal), const_cast<char*>(trigger.c_str()))) {
        log_line("cowguard-cow-report: cannot watch %s; use uwsgi.signal(%d) to ask for reports", trigger.c_str(),
                 st.cow_report_signal);
        return;
    }
    log_line("copy-on-write reports: each worker writes %s/cow-<worker>-<pid>.json at exit; touch %s (or raise uWSGI "
             "signal %d) to get them from every worker now",
             st.cow_report_dir.c_str(), trigger.c_str(), st.cow_report_signal);
}

void cow_report_at_exit() {
    if (context().settings.cow_report_dir.empty() || context().process.role != Role::Worker) return;
    if (!Py_IsInitialized()) return;
    PyGILState_STATE g = PyGILState_Ensure();
    write_report("copy-on-write report at exit");
    PyGILState_Release(g);
}

}  // namespace cowguard::glue
