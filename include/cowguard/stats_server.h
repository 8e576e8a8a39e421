// Serves a JSON document to every client of a listening socket from its own thread, with
// non-blocking I/O: a client that sends nothing or reads slowly only holds its own buffer until
// its deadline, never the master or the other clients. Needs neither uWSGI nor CPython.
#pragma once

#include <atomic>
#include <functional>
#include <string>

namespace cowguard {

struct StatsServerConfig {
    int listen_fd = -1;       // already bound and listening (uWSGI bound it)
    bool http = false;        // stats-http: read the request first, answer with HTTP/1.0 headers
    int timeout_s = 4;        // per client, like uWSGI's socket-timeout
    int max_clients = 1024;   // more at once are closed on accept
    int drain_ms = 1000;      // after stop(): how long documents already being sent may take
};

class StatsServer {
public:
    using DocumentFn = std::function<std::string()>;
    StatsServer(StatsServerConfig cfg, DocumentFn document) : cfg_(cfg), document_(std::move(document)) {}

    // The event loop; returns after stop() or when the listening socket fails (an error other
    // than running out of descriptors or memory, which only pauses accepting).
    void run();
    // From any thread; safe before, during and after run(). run() stops accepting, drops the
    // clients whose request it is still reading, lets the documents already being sent finish
    // (for at most drain_ms), then returns: a client is never cut off in the middle of one.
    void stop();

    // Figures for tests and the stats: documents served, clients dropped at their deadline.
    unsigned long served() const { return served_.load(); }
    unsigned long timed_out() const { return timed_out_.load(); }

private:
    StatsServerConfig cfg_;
    DocumentFn document_;
    std::atomic<int> wake_fd_{-1};
    std::atomic<bool> stopping_{false};
    std::atomic<unsigned long> served_{0}, timed_out_{0};
};

}  // namespace cowguard
