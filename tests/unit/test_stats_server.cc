// Unit tests for include/cowguard/stats_server.h: a StatsServer running in a thread on a TCP
// listener (127.0.0.1, port 0) or a unix socket this test creates, serving a 1 MB document with
// a counter. Plain and HTTP clients, idle, slow and never-reading clients, deadlines, stop().
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cowguard/options.h"
#include "cowguard/stats_server.h"

// Last: check.h defines a fail() macro that breaks <ios> and friends.
#include <check.h>
#include "run_suite.h"

using cowguard::StatsServer;
using cowguard::StatsServerConfig;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kPad = 1 << 20;  // 1 MB: more than a unix socket buffer holds
constexpr const char kHeaders[] =
    "HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n"
    "Content-Type: application/json\r\n\r\n";
constexpr const char kRequest[] = "GET / HTTP/1.0\r\n\r\n";
constexpr const char kMetricsType[] = "text/plain; version=0.0.4; charset=utf-8";

std::atomic<int> g_calls{0};

// The n-th document: its number first, then 1 MB of a pattern that shows misplaced bytes.
std::string document(int n) {
    std::string s = "{\"n\":" + std::to_string(n) + ",\"pad\":\"";
    s.reserve(s.size() + kPad + 2);
    for (size_t i = 0; i < kPad; i++) s.push_back(static_cast<char>('a' + i % 26));
    s += "\"}";
    return s;
}

int doc_number(const std::string& doc) {
    if (doc.rfind("{\"n\":", 0) != 0) return -1;
    return std::atoi(doc.c_str() + 5);
}

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- sockets ---------------------------------------------------------------------------------

int tcp_listener(int& port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ck_assert_int_eq(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 1024), 0);
    socklen_t len = sizeof(a);
    ck_assert_int_eq(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port = ntohs(a.sin_port);
    return fd;
}

std::string unix_path() {
    return "/tmp/cowguard-test-stats-" + std::to_string(getpid()) + ".sock";
}

int unix_listener(const std::string& path) {
    unlink(path.c_str());
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    ck_assert_int_eq(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 1024), 0);
    return fd;
}

// rcvbuf > 0: set SO_RCVBUF before connecting (a small TCP window, a small unix buffer).
int connect_tcp(int port, int rcvbuf = 0) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    ck_assert_int_eq(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
}

int connect_unix(const std::string& path, int rcvbuf = 0) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    ck_assert_int_eq(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
}

void send_all(int fd, const char* s) {
    size_t n = strlen(s);
    ck_assert_int_eq(send(fd, s, n, MSG_NOSIGNAL), static_cast<ssize_t>(n));
}

struct ReadResult {
    std::string data;
    bool eof = false;    // orderly close seen
    bool reset = false;  // ECONNRESET
};

// Reads until EOF, an error, or `timeout_s` without EOF. chunk/pause make a slow reader.
ReadResult read_all(int fd, double timeout_s, size_t chunk = 65536, int pause_ms = 0) {
    ReadResult r;
    std::vector<char> buf(chunk);
    auto t0 = Clock::now();
    while (seconds_since(t0) < timeout_s) {
        pollfd p{fd, POLLIN, 0};
        int left_ms = static_cast<int>((timeout_s - seconds_since(t0)) * 1000) + 1;
        if (poll(&p, 1, left_ms) <= 0) continue;
        ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        if (n > 0) {
            r.data.append(buf.data(), static_cast<size_t>(n));
            if (pause_ms) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
            continue;
        }
        if (n == 0) r.eof = true;
        else if (errno == ECONNRESET) r.reset = true;
        else if (errno == EINTR || errno == EAGAIN) continue;
        break;
    }
    return r;
}

// ---- the server in a thread ------------------------------------------------------------------

struct Running {
    std::unique_ptr<StatsServer> server;
    std::thread thread;
    std::atomic<bool> returned{false};
    int listen_fd = -1;

    Running(int fd, bool http, int timeout_s = 4, int max_clients = 1024)
        : Running(fd, http ? cowguard::StatsProtocol::StatsHttp : cowguard::StatsProtocol::Raw, timeout_s,
                  max_clients) {}
    Running(int fd, cowguard::StatsProtocol protocol, int timeout_s = 4, int max_clients = 1024) : listen_fd(fd) {
        g_calls = 0;
        StatsServerConfig cfg;
        cfg.listen_fd = fd;
        cfg.protocol = protocol;
        cfg.content_type = kMetricsType;
        cfg.timeout_s = timeout_s;
        cfg.max_clients = max_clients;
        server = std::make_unique<StatsServer>(cfg, [] { return document(++g_calls); });
        thread = std::thread([this] {
            server->run();
            returned = true;
        });
    }
    // Stops the loop and waits for run() to return (bounded: the test fails after 3 s).
    void stop() {
        if (!thread.joinable()) return;
        server->stop();
        auto t0 = Clock::now();
        while (!returned && seconds_since(t0) < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ck_assert_msg(returned, "run() did not return within 3 s of stop()");
        thread.join();
    }
    ~Running() {
        if (thread.joinable()) {
            server->stop();
            thread.join();
        }
        close(listen_fd);
    }
};

void expect_document(const ReadResult& r, int n, bool http) {
    std::string want = (http ? std::string(kHeaders) : std::string()) + document(n);
    ck_assert_msg(r.eof, "no EOF after %zu bytes (reset=%d)", r.data.size(), r.reset);
    ck_assert_uint_eq(r.data.size(), want.size());
    ck_assert_msg(r.data == want, "document %d differs", n);
}

}  // namespace

// ---- plain clients ---------------------------------------------------------------------------

START_TEST(tcp_client_gets_the_document) {
    int port;
    Running srv(tcp_listener(port), false);
    for (int n = 1; n <= 3; n++) {  // each client gets a fresh document: the function runs per client
        int c = connect_tcp(port);
        expect_document(read_all(c, 5), n, false);
        close(c);
    }
    srv.stop();
    ck_assert_uint_eq(srv.server->served(), 3);
    ck_assert_uint_eq(srv.server->timed_out(), 0);
}
END_TEST

START_TEST(unix_client_gets_the_document) {
    std::string path = unix_path();
    Running srv(unix_listener(path), false);
    int c = connect_unix(path);
    expect_document(read_all(c, 5), 1, false);
    close(c);
    srv.stop();
    ck_assert_uint_eq(srv.server->served(), 1);
    unlink(path.c_str());
}
END_TEST

START_TEST(many_clients_at_once) {
    int port;
    Running srv(tcp_listener(port), false);
    constexpr int kClients = 40;
    std::vector<int> fds;
    for (int i = 0; i < kClients; i++) fds.push_back(connect_tcp(port));
    std::vector<int> seen;
    for (int fd : fds) {
        ReadResult r = read_all(fd, 10);
        ck_assert(r.eof);
        int n = doc_number(r.data);
        ck_assert_int_ge(n, 1);
        ck_assert_msg(r.data == document(n), "client got a damaged document %d", n);
        seen.push_back(n);
        close(fd);
    }
    srv.stop();
    ck_assert_uint_eq(srv.server->served(), kClients);
    ck_assert_int_eq(g_calls.load(), kClients);
}
END_TEST

// A process forked while a client is connected (uWSGI respawning a worker while the stats thread
// serves) holds a copy of the client's descriptor: the client must still see the end of the
// document at once, not when that process exits (a stats stall of 10 s and more during respawns).
START_TEST(forked_copy_of_a_client_does_not_hold_its_end) {
    int port;
    int fd = tcp_listener(port);
    std::atomic<pid_t> child{0};
    StatsServerConfig cfg;
    cfg.listen_fd = fd;
    StatsServer server(cfg, [&child] {
        pid_t pid = fork();  // the client is accepted, its answer not yet built
        if (pid == 0) {
            struct timespec ts{10, 0};
            nanosleep(&ts, nullptr);  // holds every inherited descriptor for 10 s
            _exit(0);
        }
        child = pid;
        return std::string("{\"n\":1}");
    });
    std::thread t([&server] { server.run(); });
    int c = connect_tcp(port);
    auto t0 = Clock::now();
    ReadResult r = read_all(c, 5);
    double took = seconds_since(t0);
    close(c);
    ck_assert_int_gt(child.load(), 0);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    server.stop();
    t.join();
    close(fd);
    ck_assert_msg(r.eof, "no EOF while a forked process holds the client (%zu bytes in %.1f s)", r.data.size(), took);
    ck_assert_str_eq(r.data.c_str(), "{\"n\":1}");
    ck_assert_msg(took < 5, "EOF after %.1f s", took);
}
END_TEST

START_TEST(client_that_leaves_early_is_harmless) {
    // Connects and closes at once, several times, over unix (the 1 MB cannot be buffered, so the
    // server is mid-write when the peer goes away: EPIPE, not SIGPIPE).
    std::string path = unix_path();
    Running srv(unix_listener(path), false);
    for (int i = 0; i < 5; i++) {
        int c = connect_unix(path);
        char buf[100];
        ck_assert_int_gt(recv(c, buf, sizeof(buf), 0), 0);  // the server started writing
        close(c);
    }
    int c = connect_unix(path);
    ReadResult r = read_all(c, 5);
    close(c);
    ck_assert_int_ge(doc_number(r.data), 6);
    ck_assert(r.data == document(doc_number(r.data)));
    srv.stop();
    unlink(path.c_str());
}
END_TEST

// ---- http ------------------------------------------------------------------------------------

START_TEST(http_client_gets_headers_then_the_document) {
    int port;
    Running srv(tcp_listener(port), true);
    int c = connect_tcp(port);
    send_all(c, kRequest);
    expect_document(read_all(c, 5), 1, true);
    close(c);
    std::string path = unix_path();
    srv.stop();
    ck_assert_uint_eq(srv.server->served(), 1);

    Running usrv(unix_listener(path), true);
    c = connect_unix(path);
    send_all(c, kRequest);
    expect_document(read_all(c, 5), 1, true);
    close(c);
    usrv.stop();
    unlink(path.c_str());
}
END_TEST

START_TEST(http_waits_for_the_request) {
    int port;
    Running srv(tcp_listener(port), true);
    int c = connect_tcp(port);
    ReadResult r = read_all(c, 0.3);
    ck_assert(!r.eof && r.data.empty());  // nothing before the request
    ck_assert_int_eq(g_calls.load(), 0);  // and no document built for it
    send_all(c, kRequest);
    expect_document(read_all(c, 5), 1, true);
    close(c);
}
END_TEST

START_TEST(http_idle_client_does_not_delay_others) {
    int port;
    Running srv(tcp_listener(port), true);
    int idle = connect_tcp(port);  // connects, sends nothing
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (int n = 1; n <= 3; n++) {
        auto t0 = Clock::now();
        int c = connect_tcp(port);
        send_all(c, kRequest);
        ReadResult r = read_all(c, 5);
        double took = seconds_since(t0);
        expect_document(r, n, true);
        ck_assert_msg(took < 1.0, "served in %.3f s with an idle client connected", took);
        close(c);
    }
    close(idle);
}
END_TEST

// ---- slow and idle clients, deadlines ---------------------------------------------------------

START_TEST(slow_reader_gets_everything_and_others_are_served) {
    // Unix socket with a small receive buffer: the server holds most of the 1 MB and writes it
    // as the reader drains 8 KB every 10 ms (about 1.3 s in all); a second client meanwhile is
    // served at once.
    std::string path = unix_path();
    Running srv(unix_listener(path), false, /*timeout_s=*/10);
    int slow = connect_unix(path, 16384);
    ReadResult slow_result;
    std::thread reader([&] { slow_result = read_all(slow, 8, 8192, 10); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto t0 = Clock::now();
    int fast = connect_unix(path);
    ReadResult r = read_all(fast, 5);
    double took = seconds_since(t0);
    ck_assert_msg(took < 1.0, "fast client waited %.3f s behind a slow reader", took);
    expect_document(r, 2, false);
    close(fast);
    reader.join();
    expect_document(slow_result, 1, false);
    close(slow);
    srv.stop();
    ck_assert_uint_eq(srv.server->served(), 2);
    ck_assert_uint_eq(srv.server->timed_out(), 0);
    unlink(path.c_str());
}
END_TEST

START_TEST(slow_reader_over_tcp) {
    int port;
    Running srv(tcp_listener(port), true, /*timeout_s=*/10);
    int slow = connect_tcp(port, 4096);
    send_all(slow, kRequest);
    ReadResult r = read_all(slow, 8, 4096, 2);
    expect_document(r, 1, true);
    close(slow);
}
END_TEST

START_TEST(deadline_drops_an_idle_http_client) {
    int port;
    Running srv(tcp_listener(port), true, /*timeout_s=*/1);
    int idle = connect_tcp(port);
    auto t0 = Clock::now();
    ReadResult r = read_all(idle, 5);
    double took = seconds_since(t0);
    ck_assert_msg(r.eof || r.reset, "not dropped after %.2f s", took);
    ck_assert(r.data.empty());
    ck_assert_msg(took <= 2.5, "dropped after %.2f s with timeout_s = 1", took);
    close(idle);
    // Other clients are still served afterwards.
    int c = connect_tcp(port);
    send_all(c, kRequest);
    expect_document(read_all(c, 5), 1, true);
    close(c);
    srv.stop();
    ck_assert_uint_eq(srv.server->timed_out(), 1);
    ck_assert_uint_eq(srv.server->served(), 1);
}
END_TEST

START_TEST(deadline_drops_a_reader_that_never_reads) {
    // Plain mode over unix: the 1 MB does not fit the socket buffers; the client reads nothing,
    // so the server gives up at the deadline and the client finds a truncated document.
    std::string path = unix_path();
    Running srv(unix_listener(path), false, /*timeout_s=*/1);
    int stuck = connect_unix(path, 16384);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    ReadResult r = read_all(stuck, 3);
    ck_assert_msg(r.eof || r.reset, "not dropped");
    ck_assert_uint_lt(r.data.size(), document(1).size());
    close(stuck);
    srv.stop();
    ck_assert_uint_eq(srv.server->timed_out(), 1);
    ck_assert_uint_eq(srv.server->served(), 0);
    unlink(path.c_str());
}
END_TEST

// Each client keeps its whole timeout: deadlines are in milliseconds, so a client accepted late
// in a second is not dropped when another client's event wakes the loop just after the second
// turns (they once truncated to whole seconds of CLOCK_MONOTONIC).
START_TEST(deadline_keeps_the_whole_timeout) {
    auto frac = [] {
        timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return static_cast<double>(ts.tv_nsec) / 1e9;
    };
    // The timing needs the test to run within a few hundred ms of plan: up to 3 attempts on a
    // loaded machine.
    for (int attempt = 1;; attempt++) {
        int port;
        Running srv(tcp_listener(port), true, /*timeout_s=*/1);
        while (!(frac() >= 0.85 && frac() < 0.90)) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        auto t0 = Clock::now();
        int a = connect_tcp(port);  // accepted at x.85-x.90: deadline x+1
        while (frac() >= 0.5 || frac() < 0.05) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        int b = connect_tcp(port);  // at x+1.05: its events wake the loop, which then checks deadlines
        send_all(b, kRequest);
        expect_document(read_all(b, 5), 1, true);
        close(b);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        double age = seconds_since(t0);
        if (age >= 0.5) {
            close(a);
            ck_assert_msg(attempt < 3, "timing setup failed 3 times (last: %.2f s)", age);
            continue;
        }
        // `a` is about 0.25 s old: well within its 1 s timeout, it now sends its request.
        int rc = static_cast<int>(send(a, kRequest, strlen(kRequest), MSG_NOSIGNAL));
        ReadResult r = read_all(a, 3);
        close(a);
        bool served = rc > 0 && r.eof && r.data.size() > strlen(kHeaders);
        ck_assert_msg(served, "a client %.2f s old was dropped with timeout_s = 1", age);
        srv.stop();
        ck_assert_uint_eq(srv.server->timed_out(), 0);
        break;
    }
}
END_TEST

START_TEST(max_clients_closes_the_extra_ones) {
    int port;
    Running srv(tcp_listener(port), true, /*timeout_s=*/10, /*max_clients=*/2);
    int a = connect_tcp(port), b = connect_tcp(port);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    int c = connect_tcp(port);
    ReadResult r = read_all(c, 2);
    ck_assert(r.eof || r.reset);  // closed on accept
    ck_assert(r.data.empty());
    close(c);
    send_all(a, kRequest);
    expect_document(read_all(a, 5), 1, true);
    close(a);
    // One place is free again.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    int d = connect_tcp(port);
    send_all(d, kRequest);
    expect_document(read_all(d, 5), 2, true);
    close(d);
    close(b);
}
END_TEST

// ---- stop ------------------------------------------------------------------------------------

START_TEST(stop_ends_run) {
    int port;
    Running srv(tcp_listener(port), true);
    int idle = connect_tcp(port);  // a client in flight does not hold run() up
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto t0 = Clock::now();
    srv.stop();
    ck_assert_msg(seconds_since(t0) < 0.5, "stop took %.3f s", seconds_since(t0));
    ReadResult r = read_all(idle, 2);
    ck_assert(r.eof || r.reset);  // its connection was closed
    close(idle);
    // The listening socket is the caller's: still open, still listening.
    ck_assert_int_ge(fcntl(srv.listen_fd, F_GETFD), 0);
}
END_TEST

// stop() while a document is being sent (a unix client with a small buffer that has not read
// yet): the client still gets the whole document, then run() returns.
START_TEST(stop_lets_a_document_in_flight_finish) {
    std::string path = unix_path();
    Running srv(unix_listener(path), false);
    int c = connect_unix(path, 4096);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the server is waiting for room
    srv.server->stop();
    ReadResult r = read_all(c, 3);
    expect_document(r, 1, false);
    close(c);
    srv.stop();
    unlink(path.c_str());
}
END_TEST

// The drain after stop() is bounded: a client that never reads holds run() for drain_ms only.
START_TEST(stop_drain_is_bounded) {
    std::string path = unix_path();
    Running srv(unix_listener(path), false, 30);
    int c = connect_unix(path, 4096);  // never reads
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto t0 = Clock::now();
    srv.stop();
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.9 && took < 1.5, "run() returned %.3f s after stop() (drain_ms 1000)", took);
    ReadResult r = read_all(c, 2);
    ck_assert(r.eof || r.reset);  // cut only at the drain's end
    ck_assert_uint_lt(r.data.size(), document(1).size());
    close(c);
    unlink(path.c_str());
}
END_TEST

START_TEST(stop_before_run) {
    int port;
    int fd = tcp_listener(port);
    StatsServerConfig cfg;
    cfg.listen_fd = fd;
    StatsServer server(cfg, [] { return std::string("{}"); });
    server.stop();
    auto t0 = Clock::now();
    std::atomic<bool> done{false};
    std::thread t([&] {
        server.run();
        done = true;
    });
    while (!done && seconds_since(t0) < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ck_assert_msg(done, "run() after stop() did not return");
    t.join();
    close(fd);
}
END_TEST

// When the listening socket fails for good (shut down here), run() returns instead of spinning
// on a socket epoll keeps reporting ready.
START_TEST(listen_failure_ends_run) {
    int port;
    int fd = tcp_listener(port);
    StatsServerConfig cfg;
    cfg.listen_fd = fd;
    StatsServer server(cfg, [] { return std::string("{}"); });
    std::atomic<bool> done{false};
    std::thread t([&] {
        server.run();
        done = true;
    });
    auto cpu = [] {
        timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
    };
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    double idle0 = cpu();
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    double idle = cpu() - idle0;  // a waiting server: one epoll_wait a second, next to nothing
    shutdown(fd, SHUT_RDWR);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    double cpu0 = cpu();
    auto t0 = Clock::now();
    while (!done && seconds_since(t0) < 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    bool returned = done;
    double burnt = cpu() - cpu0;
    server.stop();
    t.join();
    close(fd);
    ck_assert_msg(returned, "run() kept going after its listening socket failed (%.3f s of CPU in 1 s)", burnt);
    ck_assert_msg(idle < 0.02, "the idle server used %.3f s of CPU in 1 s", idle);
}
END_TEST

// A stop() after run() has returned (a second call, or one racing with run()'s exit) writes
// nowhere: the descriptor run() closed may already belong to someone else.
START_TEST(stop_after_run_writes_nowhere) {
    int port;
    int fd = tcp_listener(port);
    StatsServerConfig cfg;
    cfg.listen_fd = fd;
    StatsServer server(cfg, [] { return std::string("{}"); });
    std::thread t([&] { server.run(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server.stop();
    t.join();  // run() has closed its epoll fd and its eventfd
    // The lowest free descriptors are the ones just closed: pipes now reuse them.
    int pipes[8][2];
    for (auto& p : pipes) ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    server.stop();  // a second stop(), as a caller's cleanup path may do
    size_t stray = 0;
    for (auto& p : pipes) {
        char buf[64];
        ssize_t n = read(p[0], buf, sizeof(buf));
        if (n > 0) stray += static_cast<size_t>(n);
        close(p[0]);
        close(p[1]);
    }
    close(fd);
    ck_assert_msg(stray == 0, "stop() after run() wrote %zu bytes into an unrelated descriptor", stray);
}
END_TEST


// ---- metrics (HTTP/1.1 routes) ---------------------------------------------------------------

using cowguard::metrics_route;
using cowguard::StatsProtocol;

START_TEST(route_table) {
    struct {
        const char* head;
        int status;
        bool head_only;
    } cases[] = {
        {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200, false},
        {"GET /metrics HTTP/1.0\r\n\r\n", 200, false},
        {"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200, false},
        {"GET http://127.0.0.1:9191/metrics HTTP/1.1\r\n\r\n", 200, false},
        {"GET /metrics HTTP/1.1\n\n", 200, false},
        {"HEAD /metrics HTTP/1.1\r\n\r\n", 200, true},
        {"GET / HTTP/1.1\r\n\r\n", 404, false},
        {"GET /metrics/ HTTP/1.1\r\n\r\n", 404, false},
        {"GET /metricsx HTTP/1.1\r\n\r\n", 404, false},
        {"GET http://host HTTP/1.1\r\n\r\n", 404, false},
        {"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, false},
        {"DELETE /metrics HTTP/1.1\r\n\r\n", 405, false},
        {"get /metrics HTTP/1.1\r\n\r\n", 405, false},  // methods are case-sensitive
        {"POST / HTTP/1.1\r\n\r\n", 404, false},
        {"GET /metrics HTTP/2.0\r\n\r\n", 400, false},
        {"GET /metrics\r\n\r\n", 400, false},          // HTTP/0.9
        {"GET  /metrics HTTP/1.1\r\n\r\n", 400, false},  // two spaces
        {"GET /metrics HTTP/1.1 x\r\n\r\n", 400, false},
        {" /metrics HTTP/1.1\r\n\r\n", 400, false},
        {"G(T /metrics HTTP/1.1\r\n\r\n", 400, false},
        {"GET /met\x01rics HTTP/1.1\r\n\r\n", 400, false},
        {"\r\n\r\n", 400, false},
        {"", 400, false},
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, false},  // a TLS client hello
    };
    for (const auto& c : cases) {
        cowguard::MetricsRoute r = metrics_route(c.head);
        ck_assert_msg(r.status == c.status, "%s -> %d, want %d", cowguard::printable(c.head).c_str(), r.status, c.status);
        ck_assert_msg(r.head_only == c.head_only, "%s head_only", cowguard::printable(c.head).c_str());
    }
}
END_TEST

START_TEST(answer_headers) {
    std::string a = cowguard::http_answer(200, kMetricsType, "x 1\n");
    ck_assert_str_eq(a.c_str(),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: 4\r\nConnection: close\r\n\r\nx 1\n");
    std::string h = cowguard::http_answer(200, kMetricsType, "x 1\n", true);
    ck_assert_msg(h.find("Content-Length: 4\r\n") != std::string::npos && h.size() == a.size() - 4, "%s", h.c_str());
    std::string m = cowguard::http_answer(405, "text/plain", "no\n");
    ck_assert_msg(m.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0) == 0, "%s", m.c_str());
    ck_assert_msg(m.find("Allow: GET, HEAD\r\n") != std::string::npos, "%s", m.c_str());
}
END_TEST

// One request on a fresh connection to a Metrics server: the raw answer.
std::string ask(int port, const std::string& request, double timeout_s = 5) {
    int c = connect_tcp(port);
    if (!request.empty()) ck_assert_int_eq(send(c, request.data(), request.size(), MSG_NOSIGNAL),
                                           static_cast<ssize_t>(request.size()));
    ReadResult r = read_all(c, timeout_s);
    close(c);
    ck_assert_msg(r.eof, "no EOF after %zu bytes", r.data.size());
    return r.data;
}

START_TEST(metrics_get_serves_the_document) {
    int port;
    Running srv(tcp_listener(port), StatsProtocol::Metrics);
    std::string a = ask(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n");
    std::string body = document(1);
    std::string head = "HTTP/1.1 200 OK\r\nContent-Type: " + std::string(kMetricsType) +
                       "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    ck_assert_uint_eq(a.size(), head.size() + body.size());
    ck_assert_msg(a == head + body, "answer differs: %.200s", a.c_str());
    srv.stop();
    ck_assert_uint_eq(srv.server->served(), 1);
}
END_TEST

START_TEST(metrics_errors_build_no_document) {
    int port;
    Running srv(tcp_listener(port), StatsProtocol::Metrics);
    ck_assert_msg(ask(port, "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0, "404");
    ck_assert_msg(ask(port, "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405 ", 0) == 0, "405");
    ck_assert_msg(ask(port, "hello\r\n\r\n").rfind("HTTP/1.1 400 Bad Request\r\n", 0) == 0, "400");
    std::string huge = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(cowguard::kMaxRequestHead, 'a') + "\r\n\r\n";
    ck_assert_msg(ask(port, huge).rfind("HTTP/1.1 431 ", 0) == 0, "431");
    std::string head_only = ask(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
    ck_assert_msg(head_only.rfind("HTTP/1.1 200 OK\r\n", 0) == 0, "HEAD");
    ck_assert_msg(head_only.size() < 200, "HEAD answered with a body (%zu bytes)", head_only.size());
    ck_assert_int_eq(g_calls.load(), 1);  // only the HEAD built one (for its Content-Length)
}
END_TEST

START_TEST(metrics_request_in_pieces) {
    int port;
    Running srv(tcp_listener(port), StatsProtocol::Metrics);
    int c = connect_tcp(port);
    const char* parts[] = {"GE", "T /metr", "ics HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"};
    for (const char* p : parts) {
        ReadResult early = read_all(c, 0.1);
        ck_assert_msg(early.data.empty() && !early.eof, "answered before the head was complete");
        send_all(c, p);
    }
    ReadResult r = read_all(c, 5);
    close(c);
    ck_assert_msg(r.eof && r.data.rfind("HTTP/1.1 200 OK\r\n", 0) == 0, "%.100s", r.data.c_str());
}
END_TEST

START_TEST(metrics_idle_client_dropped_others_served) {
    int port;
    Running srv(tcp_listener(port), StatsProtocol::Metrics, 1);
    int idle = connect_tcp(port);
    send_all(idle, "GET /metrics HTTP/1.1\r\n");  // never finishes its head
    auto t0 = Clock::now();
    std::string a = ask(port, "GET /metrics HTTP/1.1\r\n\r\n");
    ck_assert_msg(seconds_since(t0) < 0.9, "served only after %.2f s", seconds_since(t0));
    ck_assert_msg(a.rfind("HTTP/1.1 200 OK\r\n", 0) == 0, "%.100s", a.c_str());
    ReadResult r = read_all(idle, 5);
    ck_assert_msg(r.eof && r.data.empty(), "idle client: %zu bytes, eof %d", r.data.size(), r.eof);
    close(idle);
    ck_assert_uint_eq(srv.server->timed_out(), 1);
}
END_TEST

int main() {
    Suite* suite = suite_create("stats_server");
    TCase* plain = tcase_create("plain");
    tcase_set_timeout(plain, 30);
    tcase_add_test(plain, tcp_client_gets_the_document);
    tcase_add_test(plain, unix_client_gets_the_document);
    tcase_add_test(plain, many_clients_at_once);
    tcase_add_test(plain, client_that_leaves_early_is_harmless);
    tcase_add_test(plain, forked_copy_of_a_client_does_not_hold_its_end);
    suite_add_tcase(suite, plain);
    TCase* http = tcase_create("http");
    tcase_set_timeout(http, 30);
    tcase_add_test(http, http_client_gets_headers_then_the_document);
    tcase_add_test(http, http_waits_for_the_request);
    tcase_add_test(http, http_idle_client_does_not_delay_others);
    suite_add_tcase(suite, http);
    TCase* metrics = tcase_create("metrics");
    tcase_set_timeout(metrics, 30);
    tcase_add_test(metrics, route_table);
    tcase_add_test(metrics, answer_headers);
    tcase_add_test(metrics, metrics_get_serves_the_document);
    tcase_add_test(metrics, metrics_errors_build_no_document);
    tcase_add_test(metrics, metrics_request_in_pieces);
    tcase_add_test(metrics, metrics_idle_client_dropped_others_served);
    suite_add_tcase(suite, metrics);
    TCase* slow = tcase_create("slow");
    tcase_set_timeout(slow, 30);
    tcase_add_test(slow, slow_reader_gets_everything_and_others_are_served);
    tcase_add_test(slow, slow_reader_over_tcp);
    tcase_add_test(slow, deadline_drops_an_idle_http_client);
    tcase_add_test(slow, deadline_drops_a_reader_that_never_reads);
    tcase_add_test(slow, deadline_keeps_the_whole_timeout);
    tcase_add_test(slow, max_clients_closes_the_extra_ones);
    suite_add_tcase(suite, slow);
    TCase* stop = tcase_create("stop");
    tcase_set_timeout(stop, 30);
    tcase_add_test(stop, stop_ends_run);
    tcase_add_test(stop, stop_lets_a_document_in_flight_finish);
    tcase_add_test(stop, stop_drain_is_bounded);
    tcase_add_test(stop, stop_before_run);
    tcase_add_test(stop, listen_failure_ends_run);
    tcase_add_test(stop, stop_after_run_writes_nowhere);
    suite_add_tcase(suite, stop);

    return run_suite(suite);
}
