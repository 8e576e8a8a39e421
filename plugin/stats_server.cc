// Non-blocking stats server (see stats_server.h). One epoll loop; each client is a small state
// machine: [read request (http only)] -> write document -> close.
#include "cowguard/stats_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <map>

namespace cowguard {

namespace {

struct Client {
    std::string out;
    size_t sent = 0;
    bool reading = false;
    time_t deadline = 0;
};

time_t now_s() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

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
    if (wake_fd_ >= 0) {
        uint64_t one = 1;
        (void)!write(wake_fd_, &one, sizeof(one));
    }
}

void StatsServer::run() {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return;
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    set_nonblocking(cfg_.listen_fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = cfg_.listen_fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, cfg_.listen_fd, &ev);
    if (wake_fd_ >= 0) {
        ev.data.fd = wake_fd_;
        epoll_ctl(ep, EPOLL_CTL_ADD, wake_fd_, &ev);
    }
    std::map<int, Client> clients;

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
    while (!stopping_) {
        int n = epoll_wait(ep, events, 64, 1000);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == wake_fd_) continue;
            if (fd == cfg_.listen_fd) {
                for (;;) {
                    int cfd = accept4(cfg_.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) break;
                    if (static_cast<int>(clients.size()) >= cfg_.max_clients) {
                        close(cfd);
                        continue;
                    }
                    Client& c = clients[cfd];
                    c.deadline = now_s() + cfg_.timeout_s;
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
        time_t now = now_s();
        for (auto it = clients.begin(); it != clients.end();) {
            int fd = it->first;
            ++it;
            if (clients[fd].deadline <= now) {
                timed_out_++;
                drop(fd);
            }
        }
    }
    for (auto& [fd, c] : clients) close(fd);
    close(ep);
    if (wake_fd_ >= 0) close(wake_fd_);
}

}  // namespace cowguard
