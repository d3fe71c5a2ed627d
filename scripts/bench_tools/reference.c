/* reference: the benchmark's yardstick, a minimal single-threaded epoll broadcast room in C.
 *
 * scripts/bench runs it beside `multichat serve`, in the same run and driven by the same load
 * generator in text mode, and prints every multichat figure as a ratio to it (issue 17). Figures
 * copied from another day and another load generator cannot be compared with today's; a server
 * that does the least work a room must do, measured on the same machine a moment earlier or
 * later, can.
 *
 * It speaks just enough of multichat's plain-text dialect (protocol/textmode.py) for loadgen:
 *
 *   client: <password>\n            the first line (loadgen sends it without waiting)
 *   server: "Name: "                the prompt, without a newline, as multichat's
 *   client: <name>\n
 *   server: "Welcome to bench, u7! Online (3): u0, u1, u7\n"   everyone joined, itself included
 *   others: "* u7 joined\n"
 *   client: <text>\n                a chat line ("tata" or "/quit" leaves)
 *   all:    "[12:03] u7: <text>\n"  to every member, the sender included, as multichat echoes
 *   others: "* u7 left (disconnected|quit|too slow)\n"
 *
 * What each member is sent goes out in one writev per epoll batch: its own backlog (what the
 * kernel refused last time), then the part of the batch's shared broadcast buffer posted since
 * it joined. Only what the kernel refuses is copied into the member's buffer. A member whose
 * socket has refused more for SEND_STALL_MS while its backlog is over the outbox cap is dropped,
 * the rule multichat applies (server/room.py), so a member that never reads cannot hold memory.
 *
 * Usage: reference port=0 password=PW [room=bench] [outbox=98304]
 * It prints "serving room ROOM on port N" on stdout once it listens (the line multichat logs,
 * so run.py learns both servers' ports the same way), logs each drop on stderr, and exits 0 on
 * SIGTERM or SIGINT. Linux only, 127.0.0.1 only, no TLS: a benchmark tool.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* multichat's default outbox_bytes (server/limits.py): ergo's and InspIRCd's SendQ. */
#define DEFAULT_OUTBOX (96 * 1024)
/* multichat's SEND_STALL_SECONDS: a reader merely behind for a moment is not dropped. */
#define SEND_STALL_MS 500
/* A line longer than this is not chat: multichat takes 4,000 characters of text, in UTF-8. */
#define MAX_LINE (16 * 1024)
/* Names in the benchmark are "u<index>"; multichat's own rules are richer and need no copy. */
#define MAX_NAME 32
/* One read per readable member per batch, so one fast sender cannot starve the rest. */
#define READ_CHUNK (64 * 1024)
#define MAX_EVENTS 256
/* The kernel may hold this many connections for us: loadgen opens 2 x 256 at once. */
#define BACKLOG 4096
/* trio's SocketStream sets TCP_NOTSENT_LOWAT to 16 KiB on every multichat socket. Without it
 * a loopback socket's send buffer autotunes to 4 MiB, and a member that never reads would sit
 * in the kernel for seconds before its backlog reached the outbox cap here. */
#define NOTSENT_LOWAT (16 * 1024)

enum { S_PASSWORD, S_NAME, S_JOINED };

typedef struct conn {
    int fd;              /* -1 once closed (it lives until the batch ends: events may follow) */
    int state;
    int slot;            /* its index in members[] while joined */
    uint32_t events;     /* what epoll watches for it */
    int blocked;         /* the kernel refused more: write again only once epoll says so */
    uint64_t blocked_ms; /* when the kernel first refused what is still waiting; 0: nothing */
    size_t from;         /* the part of the current broadcast posted after it joined */
    char name[MAX_NAME + 1];
    char *partial;       /* the start of a line whose newline has not come yet */
    size_t partial_len;
    char *out;           /* what the kernel has not taken: out[off, len) */
    size_t off, len, cap;
    struct conn *next_dead;
} conn_t;

static const char *password = "";
static const char *room = "bench";
static int port;
static size_t outbox = DEFAULT_OUTBOX;

static int epfd;
static char listener_key, signal_key; /* their addresses tell epoll's events apart */
static conn_t **members;
static int nmembers, members_cap;
static conn_t *dead;     /* closed during this batch: freed after it */
static char *batch;      /* this batch's broadcast, shared by every member */
static size_t batch_len, batch_cap;
static char scratch[MAX_LINE + READ_CHUNK];
static char stamp[16];   /* "[HH:MM] ", as multichat's text mode starts each message */
static uint64_t now_ms;

static void die(const char *what) {
    fprintf(stderr, "reference: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("out of memory");
    return q;
}

static void grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    *buf = xrealloc(*buf, n);
    *cap = n;
}

static void tick(void) {
    static time_t last;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    time_t t = time(NULL);
    if (t == last) return;
    last = t;
    struct tm tm;
    localtime_r(&t, &tm);
    snprintf(stamp, sizeof stamp, "[%02d:%02d] ", tm.tm_hour, tm.tm_min);
}

static void set_events(conn_t *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event e = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl mod");
    c->events = events;
}

static void broadcast(const char *a, size_t alen, const char *b, size_t blen, const char *z) {
    size_t zlen = strlen(z);
    grow(&batch, &batch_cap, batch_len + alen + blen + zlen);
    memcpy(batch + batch_len, a, alen);
    memcpy(batch + batch_len + alen, b, blen);
    memcpy(batch + batch_len + alen + blen, z, zlen);
    batch_len += alen + blen + zlen;
}

static void close_conn(conn_t *c, const char *reason) {
    if (c->fd < 0) return;
    if (c->state == S_JOINED) {
        conn_t *last = members[--nmembers];
        members[c->slot] = last;
        last->slot = c->slot;
        char line[MAX_NAME + 64];
        int n = snprintf(line, sizeof line, "* %s left (%s)\n", c->name, reason);
        broadcast(line, (size_t)n, "", 0, "");
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->next_dead = dead;
    dead = c;
}

static void drop_too_slow(conn_t *c) {
    fprintf(stderr, "dropped %s (too slow: %zu bytes waiting)\n", c->name, c->len - c->off);
    /* A reset, not a FIN: the kernel forgets the unsent data now instead of holding it for
     * a peer that does not read, and the peer learns at once that it was dropped. */
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    close_conn(c, "too slow");
}

/* Give the kernel the member's backlog and then `n` new bytes, in one writev; keep the rest. */
static void send_out(conn_t *c, const char *data, size_t n) {
    if (!c->blocked) {
        struct iovec iov[2];
        int k = 0;
        size_t own = c->len - c->off;
        if (own) iov[k++] = (struct iovec){c->out + c->off, own};
        if (n) iov[k++] = (struct iovec){(void *)data, n};
        if (!k) return;
        ssize_t w;
        do w = writev(c->fd, iov, k);
        while (w < 0 && errno == EINTR);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            close_conn(c, "disconnected");
            return;
        }
        size_t done = w > 0 ? (size_t)w : 0;
        size_t mine = done < own ? done : own;
        c->off += mine;
        if (done > mine) {
            data += done - mine;
            n -= done - mine;
        }
        if (c->off == c->len && !n) {
            /* All sent, as for nearly every member: hold no buffer between batches. */
            free(c->out);
            c->out = NULL;
            c->off = c->len = c->cap = 0;
            c->blocked_ms = 0;
            return;
        }
        if (!c->blocked_ms) c->blocked_ms = now_ms;
        c->blocked = 1;
        set_events(c, EPOLLIN | EPOLLOUT);
    }
    if (n) {
        if (c->off && c->off == c->len) c->off = c->len = 0;
        if (c->off > c->cap / 2) { /* reclaim the sent front before growing */
            memmove(c->out, c->out + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
        }
        grow(&c->out, &c->cap, c->len + n);
        memcpy(c->out + c->len, data, n);
        c->len += n;
    }
    if (c->state == S_JOINED && c->len - c->off > outbox && now_ms - c->blocked_ms > SEND_STALL_MS)
        drop_too_slow(c);
}

static void reply(conn_t *c, const char *s) { send_out(c, s, strlen(s)); }

static int name_ok(const char *s, size_t n) {
    if (n == 0 || n > MAX_NAME) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static void join(conn_t *c, const char *name, size_t n) {
    /* A linear scan: 5,000 joins cost 12.5M short compares, tens of milliseconds; a hash
     * table would double this file for nothing the benchmark can see. */
    for (int i = 0; i < nmembers; i++)
        if (strlen(members[i]->name) == n && !memcmp(members[i]->name, name, n)) {
            reply(c, "! that name is taken\nName: ");
            return;
        }
    memcpy(c->name, name, n);
    c->name[n] = 0;
    broadcast("* ", 2, name, n, " joined\n");
    if (nmembers == members_cap) {
        members_cap = members_cap ? members_cap * 2 : 1024;
        members = xrealloc(members, (size_t)members_cap * sizeof *members);
    }
    c->slot = nmembers;
    members[nmembers++] = c;
    c->state = S_JOINED;
    c->from = batch_len; /* not its own join notice, nor what was said before it came */
    static char *welcome;
    static size_t welcome_cap;
    grow(&welcome, &welcome_cap, 64 + strlen(room) + (size_t)(nmembers + 1) * (MAX_NAME + 2));
    size_t w = (size_t)sprintf(welcome, "Welcome to %s, %s! Online (%d): ", room, c->name,
                               nmembers);
    for (int i = 0; i < nmembers; i++) {
        size_t len = strlen(members[i]->name);
        memcpy(welcome + w, members[i]->name, len);
        w += len;
        if (i + 1 < nmembers) welcome[w++] = ',', welcome[w++] = ' ';
    }
    welcome[w++] = '\n';
    send_out(c, welcome, w);
}

static void on_line(conn_t *c, const char *line, size_t n) {
    if (n && line[n - 1] == '\r') n--; /* telnet and Windows' nc end lines with CRLF */
    switch (c->state) {
    case S_PASSWORD:
        if (n == strlen(password) && !memcmp(line, password, n)) {
            c->state = S_NAME;
            reply(c, "Name: ");
        } else {
            reply(c, "! wrong password\n");
            close_conn(c, "wrong password");
        }
        return;
    case S_NAME:
        if (name_ok(line, n)) join(c, line, n);
        else reply(c, "! a name is 1 to 32 letters, digits, _ or -\nName: ");
        return;
    default:
        if (n == 0) return; /* a blank line says nothing, as in multichat */
        if ((n == 4 && !memcmp(line, "tata", 4)) || (n == 5 && !memcmp(line, "/quit", 5))) {
            close_conn(c, "quit");
            return;
        }
        broadcast(stamp, strlen(stamp), c->name, strlen(c->name), ": ");
        broadcast(line, n, "", 0, "\n");
    }
}

static void on_readable(conn_t *c) {
    /* Lines are split in a scratch buffer shared by all; a member keeps only an unfinished
     * line between reads, so an idle connection costs no buffer at all. */
    size_t have = c->partial_len;
    if (have) memcpy(scratch, c->partial, have);
    ssize_t r = read(c->fd, scratch + have, READ_CHUNK);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (r <= 0) {
        close_conn(c, "disconnected");
        return;
    }
    char *p = scratch, *end = scratch + have + (size_t)r;
    for (char *nl; c->fd >= 0 && (nl = memchr(p, '\n', (size_t)(end - p))); p = nl + 1)
        on_line(c, p, (size_t)(nl - p));
    if (c->fd < 0) return;
    size_t left = (size_t)(end - p);
    if (left > MAX_LINE) {
        reply(c, "! line too long\n");
        close_conn(c, "line too long");
        return;
    }
    if (left) {
        c->partial = xrealloc(c->partial, left);
        memcpy(c->partial, p, left);
    } else {
        free(c->partial);
        c->partial = NULL;
    }
    c->partial_len = left;
}

static void on_accept(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "reference: accept: %s\n", strerror(errno));
            return;
        }
        /* As trio's SocketStream does for multichat: every write goes out at once, and the
         * kernel keeps little unsent, so what a member is behind by is counted here. */
        int one = 1, lowat = NOTSENT_LOWAT;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
        conn_t *c = calloc(1, sizeof *c);
        if (!c) die("out of memory");
        c->fd = fd;
        c->state = S_PASSWORD;
        c->events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl add");
    }
}

/* The end of a batch: every member gets what was broadcast in it, in one writev each. Drops
 * during the pass broadcast their leave notices into a new batch, hence the loop. */
static void flush_batch(void) {
    static char *sending;
    static size_t sending_cap;
    while (batch_len) {
        char *spare = sending;
        size_t spare_cap = sending_cap, n = batch_len;
        sending = batch;
        sending_cap = batch_cap;
        batch = spare;
        batch_cap = spare_cap;
        batch_len = 0;
        /* Downwards: a drop moves the last member, already served, into the freed slot. */
        for (int i = nmembers - 1; i >= 0; i--) {
            conn_t *c = members[i];
            size_t from = c->from;
            c->from = 0;
            send_out(c, sending + from, n - from);
        }
    }
}

static void arg(const char *kv) {
    const char *v = strchr(kv, '=');
    if (!v) {
        fprintf(stderr, "reference: bad argument %s (want key=value)\n", kv);
        exit(2);
    }
    v++;
    if (!strncmp(kv, "port=", 5)) port = atoi(v);
    else if (!strncmp(kv, "password=", 9)) password = v;
    else if (!strncmp(kv, "room=", 5)) room = v;
    else if (!strncmp(kv, "outbox=", 7)) outbox = (size_t)strtoull(v, NULL, 10);
    else {
        fprintf(stderr, "reference: unknown argument %s\n", kv);
        exit(2);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) arg(argv[i]);
    signal(SIGPIPE, SIG_IGN); /* a vanished peer is an EPIPE from writev, not a death */
    struct rlimit rl; /* 5,000 members need as many descriptors */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    /* SIGTERM through a signalfd: it wakes epoll_wait, with no race against a flag. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    if (sigprocmask(SIG_BLOCK, &stop, NULL) < 0) die("sigprocmask");
    int sfd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");
    struct epoll_event se = {.events = EPOLLIN, .data.ptr = &signal_key};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &se) < 0) die("epoll_ctl add");

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(lfd, BACKLOG) < 0) die("listen");
    socklen_t salen = sizeof sa;
    if (getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) die("getsockname");
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = &listener_key};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le) < 0) die("epoll_ctl add");
    printf("serving room %s on port %d\n", room, ntohs(sa.sin_port));
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    for (int running = 1; running;) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        tick();
        for (int i = 0; i < n; i++) {
            void *key = evs[i].data.ptr;
            if (key == &listener_key) {
                on_accept(lfd);
                continue;
            }
            if (key == &signal_key) {
                running = 0;
                continue;
            }
            conn_t *c = key;
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT)) {
                c->blocked = 0;
                send_out(c, NULL, 0);
                if (c->fd >= 0 && !c->blocked) set_events(c, EPOLLIN);
            }
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
        }
        flush_batch();
        while (dead) {
            conn_t *c = dead;
            dead = c->next_dead;
            free(c->partial);
            free(c->out);
            free(c);
        }
    }
    /* Closing with members still connected: the harness stops the generators first. */
    for (int i = nmembers - 1; i >= 0; i--) close(members[i]->fd);
    close(lfd);
    close(sfd);
    close(epfd);
    return 0;
}
