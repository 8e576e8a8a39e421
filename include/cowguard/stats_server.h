// Serves a document to every client of a listening socket from its own thread, with non-blocking
// I/O: a client that sends nothing or reads slowly only holds its own buffer until its deadline,
// never the master or the other clients. Needs neither uWSGI nor CPython.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cowguard/result.h"

namespace cowguard {

enum class StatsProtocol {
    Raw,        // uWSGI's stats socket: the JSON document at once, then close
    StatsHttp,  // stats-http: any bytes of a request, then HTTP/1.0 headers and the JSON document
    Metrics,    // cowguard-prometheus: a whole HTTP/1.x request head, routed by metrics_route()
};

struct StatsServerConfig {
    int listen_fd = -1;       // already bound and listening
    StatsProtocol protocol = StatsProtocol::Raw;
    std::string content_type;  // Metrics: the Content-Type of a 200 answer
    int timeout_s = 4;        // per client, like uWSGI's socket-timeout
    int max_clients = 1024;   // more at once are closed on accept
    int drain_ms = 1000;      // after stop(): how long documents already being sent may take
    // Where the server says a system call failed ("epoll_ctl(ADD client): No space left on
    // device"), once per call; null: nowhere. A client that hangs up is not a failure.
    std::function<void(const std::string&)> log;
};

// What the Metrics protocol answers to one request head (the request line and headers, up to the
// blank line): GET or HEAD of /metrics (a query string is ignored) -> 200; another path -> 404;
// another method -> 405; a request line that is not `METHOD SP TARGET SP HTTP/1.x` -> 400.
struct MetricsRoute {
    int status = 400;
    bool head_only = false;  // HEAD: the headers of the 200 answer without its body
};
MetricsRoute metrics_route(std::string_view head);

// A whole HTTP/1.1 answer that closes the connection: status line, Content-Type, Content-Length,
// `Connection: close` (and `Allow: GET, HEAD` with a 405), then `body` unless head_only.
std::string http_answer(int status, std::string_view content_type, std::string_view body, bool head_only = false);

// Longest request head the Metrics protocol reads; a longer one gets a 431 answer.
constexpr size_t kMaxRequestHead = 8192;

class StatsServer {
public:
    // The JSON document (Raw, StatsHttp) or the body of GET /metrics (Metrics).
    using DocumentFn = std::function<std::string()>;
    StatsServer(StatsServerConfig cfg, DocumentFn document) : cfg_(cfg), document_(std::move(document)) {}

    // Sets up the event loop (epoll, the wake-up eventfd, the listening socket watched). An error
    // (logged through cfg.log too) when it cannot: the caller then serves the socket some other
    // way. run() calls it when the caller has not.
    Status open();
    // The event loop; returns after stop() or when the listening socket fails (an error other
    // than running out of descriptors or memory, which only pauses accepting).
    void run();
    // From any thread; safe before, during and after run(). run() stops accepting, drops the
    // clients whose request it is still reading, lets the documents already being sent finish
    // (for at most drain_ms), then returns: a client is never cut off in the middle of one.
    void stop();

    // Figures for tests and the stats: answers sent whole (error answers of the Metrics protocol
    // included), clients dropped at their deadline.
    unsigned long served() const { return served_.load(); }
    unsigned long timed_out() const { return timed_out_.load(); }

private:
    struct Loop;  // the event loop's state, in stats_server.cc
    StatsServerConfig cfg_;
    DocumentFn document_;
    std::atomic<int> wake_fd_{-1};
    std::atomic<bool> stopping_{false};
    std::atomic<unsigned long> served_{0}, timed_out_{0};
    std::shared_ptr<Loop> loop_;  // set by open(), released when run() returns
};

}  // namespace cowguard
