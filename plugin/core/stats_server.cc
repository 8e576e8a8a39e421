// Non-blocking stats server (see stats_server.h). One epoll loop; each client is a small state
// machine: [read request (StatsHttp, Metrics)] -> write answer -> close.
#include "cowguard/stats_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <map>

namespace cowguard {

namespace {

struct Client {
    std::string in;  // Metrics: the request head read so far
    std::string out;
    size_t sent = 0;
    bool reading = false;
    int64_t deadline_ms = 0;
};

int64_t now_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// accept() errors after which the listening socket still works: retry later.
bool accept_error_is_transient(int err) {
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == ECONNABORTED ||
           err == EPROTO || err == EPERM || err == EINTR;
}

constexpr int kAcceptPauseMs = 100;  // after running out of descriptors: let some close first

void set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

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

void StatsServer::stop() {
    stopping_ = true;
    int fd = wake_fd_.load();
    if (fd >= 0) {
        uint64_t one = 1;
        (void)!write(fd, &one, sizeof(one));
    }
}

void StatsServer::run() {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return;
    int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    wake_fd_ = wake;
    set_nonblocking(cfg_.listen_fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = cfg_.listen_fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, cfg_.listen_fd, &ev);
    if (wake >= 0) {
        ev.data.fd = wake;
        epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev);
    }
    std::map<int, Client> clients;
    int64_t accept_paused_until = 0;  // 0: accepting
    bool listen_failed = false;
    auto set_accepting = [&](bool on) {
        epoll_event l{};
        l.events = on ? static_cast<uint32_t>(EPOLLIN) : 0u;
        l.data.fd = cfg_.listen_fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, cfg_.listen_fd, &l);
    };

    auto drop = [&](int fd) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
        clients.erase(fd);
    };
    // Builds the answer and tries to send it at once; most documents fit the socket buffer.
    auto start_writing = [&](int fd, Client& c) {
        c.reading = false;
        if (cfg_.protocol == StatsProtocol::Metrics) {
            size_t end = head_end(c.in);
            bool too_long = end == std::string::npos ? c.in.size() > kMaxRequestHead : end > kMaxRequestHead;
            MetricsRoute route = too_long ? MetricsRoute{431, false} : metrics_route(c.in);
            std::string body;
            const char* text = "text/plain; charset=utf-8";
            switch (route.status) {
                case 200: body = document_(); break;
                case 404: body = "not found: cowguard serves GET /metrics here\n"; break;
                case 405: body = "method not allowed: GET or HEAD /metrics\n"; break;
                case 431: body = "request head over " + std::to_string(kMaxRequestHead) + " bytes\n"; break;
                default: body = "bad request: expected GET /metrics HTTP/1.1\n"; break;
            }
            c.out = http_answer(route.status, route.status == 200 ? cfg_.content_type : text, body, route.head_only);
            c.in.clear();
            c.in.shrink_to_fit();
        } else {
            c.out = (cfg_.protocol == StatsProtocol::StatsHttp ? std::string(kHttpHeaders) : std::string()) +
                    document_();
        }
        epoll_event w{};
        w.events = EPOLLOUT;
        w.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &w);
    };
    auto try_write = [&](int fd, Client& c) {
        while (c.sent < c.out.size()) {
            ssize_t n = send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
            if (n > 0) {
                c.sent += static_cast<size_t>(n);
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // wait for EPOLLOUT
            if (n < 0 && errno == EINTR) continue;
            drop(fd);
            return;
        }
        served_++;
        drop(fd);
    };

    epoll_event events[64];
    int64_t drain_until = -1;  // set at stop(): no new clients, the documents in flight finish
    while (!listen_failed) {
        if (stopping_ && drain_until < 0) {
            drain_until = now_ms() + cfg_.drain_ms;
            epoll_ctl(ep, EPOLL_CTL_DEL, cfg_.listen_fd, nullptr);
            accept_paused_until = 0;
            for (auto it = clients.begin(); it != clients.end();) {
                int fd = it->first;
                bool reading = it->second.reading;
                ++it;
                if (reading) drop(fd);
            }
        }
        if (drain_until >= 0 && (clients.empty() || now_ms() >= drain_until)) break;
        int wait_ms = drain_until >= 0 ? static_cast<int>(std::max<int64_t>(0, drain_until - now_ms()))
                                       : accept_paused_until ? kAcceptPauseMs : 1000;
        int n = epoll_wait(ep, events, 64, wait_ms);
        if (n < 0 && errno != EINTR) break;
        if (accept_paused_until && now_ms() >= accept_paused_until) {
            accept_paused_until = 0;
            set_accepting(true);
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == wake) {
                uint64_t v;
                (void)!read(wake, &v, sizeof(v));  // level-triggered: would wake every loop while draining
                continue;
            }
            if (fd == cfg_.listen_fd) {
                if (events[i].events & (EPOLLERR | EPOLLHUP)) {
                    listen_failed = true;
                    break;
                }
                for (;;) {
                    int cfd = accept4(cfg_.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                        if (accept_error_is_transient(errno)) {
                            // A queued connection we cannot take yet would wake us at once, forever.
                            accept_paused_until = now_ms() + kAcceptPauseMs;
                            set_accepting(false);
                        } else {
                            listen_failed = true;  // not a listening socket any more
                        }
                        break;
                    }
                    if (static_cast<int>(clients.size()) >= cfg_.max_clients) {
                        close(cfd);
                        continue;
                    }
                    Client& c = clients[cfd];
                    c.deadline_ms = now_ms() + static_cast<int64_t>(cfg_.timeout_s) * 1000;
                    epoll_event r{};
                    r.events = EPOLLIN;
                    r.data.fd = cfd;
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &r);
                    if (cfg_.protocol != StatsProtocol::Raw) {
                        c.reading = true;
                    } else {
                        start_writing(cfd, c);
                        try_write(cfd, clients[cfd]);
                    }
                }
                continue;
            }
            auto it = clients.find(fd);
            if (it == clients.end()) continue;
            Client& c = it->second;
            if (c.reading) {
                char buf[4096];
                ssize_t r = recv(fd, buf, sizeof(buf), 0);
                if (r > 0 && cfg_.protocol == StatsProtocol::Metrics) {
                    // The whole head first (a request may come in pieces), within kMaxRequestHead.
                    c.in.append(buf, static_cast<size_t>(r));
                    if (head_end(c.in) == std::string::npos && c.in.size() <= kMaxRequestHead) continue;
                    start_writing(fd, c);
                    try_write(fd, clients[fd]);
                } else if (r > 0) {
                    // Like uWSGI: any bytes of a request are enough; the document is the only resource.
                    start_writing(fd, c);
                    try_write(fd, clients[fd]);
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    drop(fd);
                }
            } else {
                try_write(fd, c);
            }
        }
        // Idle or slow clients lose their place at their deadline.
        int64_t now = now_ms();
        for (auto it = clients.begin(); it != clients.end();) {
            int fd = it->first;
            ++it;
            if (clients[fd].deadline_ms <= now) {
                timed_out_++;
                drop(fd);
            }
        }
    }
    for (auto& [fd, c] : clients) close(fd);
    close(ep);
    wake_fd_ = -1;  // before closing it: a late stop() must not write into a reused descriptor
    if (wake >= 0) close(wake);
}

}  // namespace cowguard
