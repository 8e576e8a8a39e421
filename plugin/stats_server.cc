// Non-blocking stats server (see stats_server.h). One epoll loop; each client is a small state
// machine: [read request (http only)] -> write document -> close.
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

}  // namespace

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
        c.out = (cfg_.http ? std::string(kHttpHeaders) : std::string()) + document_();
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
                    if (cfg_.http) {
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
                // Like uWSGI: any bytes of a request are enough; the document is the only resource.
                char buf[4096];
                ssize_t r = recv(fd, buf, sizeof(buf), 0);
                if (r > 0) {
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
