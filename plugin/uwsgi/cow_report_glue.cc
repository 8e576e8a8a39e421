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
#include "cowguard/glue_state.h"

extern struct uwsgi_server uwsgi;

namespace cowguard::glue {

namespace {

void write_report(const char* why) {
    const std::string& dir = state().settings.cow_report_dir;
    cow_report::Report r = cow_report::build();
    std::string err;
    std::string path = cow_report::write_file(dir, uwsgi.mywid, r, &err);
    if (path.empty())
        log_line("worker %d (pid %d): cannot write the copy-on-write report into %s: %s", uwsgi.mywid,
                 static_cast<int>(getpid()), dir.c_str(), err.c_str());
    else
        log_line("worker %d (pid %d) %s: %s -> %s", uwsgi.mywid, static_cast<int>(getpid()), why,
                 cow_report::summary(r, 5).c_str(), path.c_str());
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
    const Settings& st = state().settings;
    if (st.cow_report_dir.empty()) return;
    struct stat sb;
    int rc = lstat(st.cow_report_dir.c_str(), &sb);
    if (rc != 0 && errno != ENOENT && errno != ENOTDIR) {
        log_line("cowguard-cow-report: '%s' cannot be reached by this process (uid %d): %s",
                 st.cow_report_dir.c_str(), static_cast<int>(geteuid()), strerror(errno));
        exit(1);
    }
    if (rc != 0 || !S_ISDIR(sb.st_mode)) {
        log_line("cowguard-cow-report: '%s' is not a directory (a symlink is refused too); create it first",
                 st.cow_report_dir.c_str());
        exit(1);
    }
    if (access(st.cow_report_dir.c_str(), W_OK | X_OK) != 0) {
        log_line("cowguard-cow-report: '%s' is not writable by this process (uid %d); reports could not be written",
                 st.cow_report_dir.c_str(), static_cast<int>(geteuid()));
        exit(1);
    }
}

void cow_report_setup_master(int python_modifier) {
    const Settings& st = state().settings;
    if (st.cow_report_dir.empty()) return;
    if (!uwsgi.master_process) {
        log_line("cowguard-cow-report: reports are written at exit; the on-demand signal needs master = true");
        return;
    }
    PyObject* handler = PyCFunction_New(&g_signal_def, nullptr);  // kept for the life of the process
    if (!handler || uwsgi_register_signal(static_cast<uint8_t>(st.cow_report_signal), const_cast<char*>("workers"),
                                          handler, static_cast<uint8_t>(python_modifier))) {
        log_line("cowguard-cow-report-signal: cannot register uWSGI signal %d (already taken?): pick another one",
                 st.cow_report_signal);
        exit(1);
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
    if (state().settings.cow_report_dir.empty() || uwsgi.mywid <= 0 || uwsgi.muleid > 0 || uwsgi.i_am_a_spooler) return;
    if (!Py_IsInitialized()) return;
    PyGILState_STATE g = PyGILState_Ensure();
    write_report("copy-on-write report at exit");
    PyGILState_Release(g);
}

}  // namespace cowguard::glue
