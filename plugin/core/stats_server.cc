// Non-blocking stats server (see stats_server.h). One epoll loop (StatsServer::Loop); each client
// is a small state machine: [Reading its request (StatsHttp, Metrics)] -> Writing the answer -> closed.
#include "cowguard/stats_server.h"
#include "cowguard/measure.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

namespace cowguard {

namespace {

// accept() errors after which the listening socket still works: retry later.
bool accept_error_is_transient(int err) {
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == ECONNABORTED ||
           err == EPROTO || err == EPERM || err == EINTR;
}

constexpr int kAcceptPauseMs = 100;  // after running out of descriptors: let some close first

constexpr const char kHttpHeaders[] =
    "HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n"
    "Content-Type: application/json\r\n\r\n";

const char* reason_phrase(int status) {
    switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 431: return "Request Header Fields Too Large";
    }
    return "Error";
}

// Where a request head ends (just past its blank line), or npos. Bare LF lines are accepted too.
size_t head_end(std::string_view s) {
    size_t crlf = s.find("\r\n\r\n"), lf = s.find("\n\n");
    size_t a = crlf == std::string_view::npos ? crlf : crlf + 4, b = lf == std::string_view::npos ? lf : lf + 2;
    return std::min(a, b);
}

bool is_token_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

MetricsRoute metrics_route(std::string_view head) {
    MetricsRoute r;
    size_t eol = head.find('\n');
    std::string_view line = head.substr(0, eol);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos || sp1 == 0) return r;
    size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp2 == sp1 + 1 || line.find(' ', sp2 + 1) != std::string_view::npos) return r;
    std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                     version = line.substr(sp2 + 1);
    for (char c : method)
        if (!is_token_char(c)) return r;
    if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." || version[7] < '0' || version[7] > '9') return r;
    for (char c : target)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return r;
    // An absolute-form target (a proxy's "http://host:port/metrics") names the same path.
    if (target.substr(0, 7) == "http://" || target.substr(0, 8) == "https://") {
        size_t slash = target.find('/', target.find("//") + 2);
        target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    std::string_view path = target.substr(0, target.find('?'));
    if (path != "/metrics") {
        r.status = 404;
        return r;
    }
    if (method != "GET" && method != "HEAD") {
        r.status = 405;
        return r;
    }
    r.status = 200;
    r.head_only = method == "HEAD";
    return r;
}

std::string http_answer(int status, std::string_view content_type, std::string_view body, bool head_only) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\nContent-Type: ";
    out += content_type;
    out += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    if (status == 405) out += "Allow: GET, HEAD\r\n";
    out += "Connection: close\r\n\r\n";
    if (!head_only) out += body;
    return out;
}

// The event loop: the epoll set, the clients, and one function per event. Each client is in one
// phase: Reading its request (StatsHttp, Metrics) until it has one, then Writing the answer until
// it is sent; then it is closed. Every system call's failure is handled where it happens and
// logged once per call (through cfg.log).
struct StatsServer::Loop {
    enum class Phase { Reading, Writing };
    struct Client {
        Phase phase = Phase::Reading;
        std::string in;  // Metrics: the request head read so far
        std::string out;
        size_t sent = 0;
        int64_t deadline_ms = 0;
    };

    StatsServer& server;
    const StatsServerConfig& cfg;
    int ep = -1, wake = -1;
    std::map<int, Client> clients;
    int64_t accept_paused_until = 0;  // 0: accepting
    int64_t drain_until = -1;         // set at stop(): no new clients, the documents in flight finish
    bool listen_failed = false;
    std::map<std::string, bool> logged;  // system calls whose failure was logged

    explicit Loop(StatsServer& s) : server(s), cfg(s.cfg_) {}
    ~Loop() {
        for (auto& [fd, c] : clients) hang_up(fd);
        if (ep >= 0) close(ep);
        server.wake_fd_ = -1;  // before closing it: a late stop() must not write into a reused descriptor
        if (wake >= 0) close(wake);
    }

    static int64_t now_ms() { return static_cast<int64_t>(mono_ns() / 1000000); }

    // Logs `call: strerror(err)` once per call; the same line as an error, for open().
    Error failed(const std::string& call, int err) {
        std::string line = call + ": " + strerror(err);
        if (cfg.log && !logged[call]) {
            logged[call] = true;
            cfg.log(line);
        }
        return fail_with(line);
    }

    // epoll_ctl with its failure logged; false when it failed.
    Status watch(int op, int fd, uint32_t events, const char* what) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        if (epoll_ctl(ep, op, fd, &ev) == 0) return {};
        return failed(std::string("epoll_ctl(") + what + ")", errno);
    }

    Status open() {
        ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0) return failed("epoll_create1", errno);
        int fl = fcntl(cfg.listen_fd, F_GETFL, 0);
        if (fl < 0 || fcntl(cfg.listen_fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return failed("fcntl(listening socket, O_NONBLOCK)", errno);
        if (Status watched = watch(EPOLL_CTL_ADD, cfg.listen_fd, EPOLLIN, "ADD listening socket"); !watched)
            return watched;
        // Without the eventfd, stop() is seen at the next wake-up (at most a second later).
        wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake < 0) (void)failed("eventfd", errno);
        else if (!watch(EPOLL_CTL_ADD, wake, EPOLLIN, "ADD eventfd")) close(std::exchange(wake, -1));
        server.wake_fd_ = wake;
        return {};
    }

    // A process forked while the client was connected (uWSGI respawning a worker) holds a copy of
    // its descriptor, and close() acts on this copy only: shutdown() ends the connection now (after
    // what was sent), and DEL takes it out of the epoll set, which watches the file, not the copy.
    static void hang_up(int fd) {
        shutdown(fd, SHUT_RDWR);
        close(fd);
    }

    void drop(int fd) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        hang_up(fd);
        clients.erase(fd);
    }

    // Running out of descriptors or memory: a queued connection we cannot take yet would wake us at
    // once, forever, so the listening socket is left out of the set for a moment.
    void pause_accepting(int err) {
        failed("accept4", err);
        if (watch(EPOLL_CTL_MOD, cfg.listen_fd, 0, "MOD listening socket, pause")) accept_paused_until = now_ms() + kAcceptPauseMs;
    }

    void resume_accepting() {
        if (!accept_paused_until || now_ms() < accept_paused_until) return;
        accept_paused_until = 0;
        if (!watch(EPOLL_CTL_MOD, cfg.listen_fd, EPOLLIN, "MOD listening socket, resume")) listen_failed = true;
    }

    void accept_all() {
        for (;;) {
            int fd = accept4(cfg.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;
                if (accept_error_is_transient(errno)) {
                    pause_accepting(errno);
                } else {
                    failed("accept4", errno);
                    listen_failed = true;  // not a listening socket any more
                }
                return;
            }
            if (static_cast<int>(clients.size()) >= cfg.max_clients) {
                hang_up(fd);
                continue;
            }
            if (!watch(EPOLL_CTL_ADD, fd, EPOLLIN, "ADD client")) {
                hang_up(fd);
                continue;
            }
            Client& c = clients[fd];
            c.deadline_ms = now_ms() + static_cast<int64_t>(cfg.timeout_s) * 1000;
            if (cfg.protocol == StatsProtocol::Raw) answer(fd, c);  // Raw: no request to wait for
        }
    }

    // Reading: the request (any bytes for StatsHttp, like uWSGI; the whole head for Metrics).
    void on_readable(int fd, Client& c) {
        char buf[4096];
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (r <= 0) {
            drop(fd);  // the client hung up or reset
            return;
        }
        if (cfg.protocol == StatsProtocol::Metrics) {
            // The whole head first (a request may come in pieces), within kMaxRequestHead.
            c.in.append(buf, static_cast<size_t>(r));
            if (head_end(c.in) == std::string::npos && c.in.size() <= kMaxRequestHead) return;
        }
        answer(fd, c);
    }

    std::string metrics_answer(const std::string& head) {
        size_t end = head_end(head);
        bool too_long = end == std::string::npos ? head.size() > kMaxRequestHead : end > kMaxRequestHead;
        MetricsRoute route = too_long ? MetricsRoute{431, false} : metrics_route(head);
        std::string body;
        switch (route.status) {
            case 200: body = server.document_(); break;
            case 404: body = "not found: cowguard serves GET /metrics here\n"; break;
            case 405: body = "method not allowed: GET or HEAD /metrics\n"; break;
            case 431: body = "request head over " + std::to_string(kMaxRequestHead) + " bytes\n"; break;
            default: body = "bad request: expected GET /metrics HTTP/1.1\n"; break;
        }
        const char* text = "text/plain; charset=utf-8";
        return http_answer(route.status, route.status == 200 ? cfg.content_type : text, body, route.head_only);
    }

    // Reading -> Writing: builds the answer and sends what the socket takes now (most documents
    // fit its buffer); the rest when epoll says it is writable.
    void answer(int fd, Client& c) {
        c.phase = Phase::Writing;
        if (cfg.protocol == StatsProtocol::Metrics) {
            c.out = metrics_answer(c.in);
            std::string().swap(c.in);
        } else {
            c.out = (cfg.protocol == StatsProtocol::StatsHttp ? std::string(kHttpHeaders) : std::string()) +
                    server.document_();
        }
        if (!watch(EPOLL_CTL_MOD, fd, EPOLLOUT, "MOD client, writing")) {
            drop(fd);
            return;
        }
        on_writable(fd, c);
    }

    // Writing: as much as the socket takes; closed once all is sent (or the client is gone).
    void on_writable(int fd, Client& c) {
        while (c.sent < c.out.size()) {
            ssize_t n = send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
            if (n > 0) {
                c.sent += static_cast<size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return;  // wait for EPOLLOUT
            } else {
                drop(fd);  // the client hung up or reset
                return;
            }
        }
        server.served_++;
        drop(fd);
    }

    // stop(): no new clients, those still Reading dropped, those Writing given until drain_until.
    void begin_drain() {
        drain_until = now_ms() + cfg.drain_ms;
        (void)watch(EPOLL_CTL_DEL, cfg.listen_fd, 0, "DEL listening socket");  // paused or not, it is in the set
        accept_paused_until = 0;
        for (auto it = clients.begin(); it != clients.end();) {
            int fd = it->first;
            bool reading = it->second.phase == Phase::Reading;
            ++it;
            if (reading) drop(fd);
        }
    }

    // Idle or slow clients lose their place at their deadline.
    void expire() {
        int64_t now = now_ms();
        for (auto it = clients.begin(); it != clients.end();) {
            int fd = it->first;
            bool late = it->second.deadline_ms <= now;
            ++it;
            if (late) {
                server.timed_out_++;
                drop(fd);
            }
        }
    }

    int wait_ms() const {
        if (drain_until >= 0) return static_cast<int>(std::max<int64_t>(0, drain_until - now_ms()));
        return accept_paused_until ? kAcceptPauseMs : 1000;
    }

    void run() {
        epoll_event events[64];
        while (!listen_failed) {
            if (server.stopping_ && drain_until < 0) begin_drain();
            if (drain_until >= 0 && (clients.empty() || now_ms() >= drain_until)) return;
            int n = epoll_wait(ep, events, 64, wait_ms());
            if (n < 0 && errno != EINTR) {
                failed("epoll_wait", errno);
                return;
            }
            resume_accepting();
            for (int i = 0; i < n && !listen_failed; i++) {
                int fd = events[i].data.fd;
                if (fd == wake) {
                    uint64_t v;
                    (void)!read(wake, &v, sizeof(v));  // level-triggered: would wake every loop while draining
                } else if (fd == cfg.listen_fd) {
                    if (events[i].events & (EPOLLERR | EPOLLHUP)) listen_failed = true;
                    else if (drain_until < 0) accept_all();
                } else if (auto it = clients.find(fd); it != clients.end()) {
                    if (it->second.phase == Phase::Reading) on_readable(fd, it->second);
                    else on_writable(fd, it->second);
                }
            }
            expire();
        }
        if (cfg.log) cfg.log("the listening socket failed: no more clients are served");
    }
};

Status StatsServer::open() {
    if (loop_) return {};
    auto loop = std::make_shared<Loop>(*this);
    if (Status opened = loop->open(); !opened) return opened;
    loop_ = std::move(loop);
    return {};
}

void StatsServer::run() {
    if (!open()) return;
    std::shared_ptr<Loop> loop = std::move(loop_);  // closed when run() returns
    loop->run();
}

void StatsServer::stop() {
    stopping_ = true;
    int fd = wake_fd_.load();
    if (fd >= 0) {
        uint64_t one = 1;
        (void)!write(fd, &one, sizeof(one));
    }
}

}  // namespace cowguard
