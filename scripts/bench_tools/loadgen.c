/* loadgen: one process of the multichat benchmark's load generator.
 *
 * It owns a slice of a room's members (global indices [first, first+count)), each one a real
 * TCP connection to `multichat serve` on 127.0.0.1, all driven by one epoll loop so that the
 * generator costs a small fraction of what the server does. The orchestrator
 * (scripts/bench_tools/run.py) starts several of these and speaks to each on stdin/stdout:
 *
 *   loadgen -> "READY"            every member it owns has joined (join scenario: at once)
 *   orch    -> "GO <mono_ns>"     start at that CLOCK_MONOTONIC time (shared by all processes)
 *   loadgen -> "RESULT {json}"    what it sent and saw; then it waits for stdin to close
 *
 * Every message's text carries its sender, a per-sender counter and its send time:
 *   "@<sender>.<counter>.<mono_ns>." + "x" padding + "!"   (exactly text_len characters)
 * so each receiver can count latency, loss, duplicates and reordering per sender, and tell a
 * frame that holds two markers (merged) or a broken one (split).
 *
 * Written for the benchmark only: Linux, loopback, no TLS, bounded by count and deadline.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { ST_IDLE, ST_CONNECTING, ST_HELLO, ST_TEXT_NAME, ST_TEXT_WELCOME, ST_JOINED, ST_CLOSED };
enum { SC_BURST, SC_RATE, SC_JOIN };

#define HIST_BUCKETS 4096
#define MAX_LEAVES 64
#define TIMER_KEY UINT64_MAX
#define OUT_BATCH (64 * 1024)

typedef struct {
    int fd;
    int gidx;        /* global member index: the name is "u<gidx>" */
    int state;
    int sender;      /* sender index (== gidx when gidx < senders), or -1 */
    int stalled;     /* never reads after its welcome */
    int complete;
    int want_out;    /* EPOLLOUT is on */
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outoff, outlen, outcap;
    uint64_t generated;     /* messages put into `out` */
    uint64_t distinct;      /* distinct messages received */
    uint8_t *names;         /* join scenario: the members this one knows of */
    uint32_t names_known;
} conn_t;

/* configuration */
static int port = 5002, first = 0, count = 1, total = 1, senders = 0, text_mode = 0;
static int scenario = SC_BURST, stalled_idx = -1, window = 256, text_len = 64;
static uint64_t per_sender = 0;
static double rate = 0, deadline_s = 60, idle_s = 5;
static const char *password = "bench";
static size_t bufsize = 64 * 1024;

/* state */
static conn_t *conns;
static int epfd;
static uint64_t start_ns;
static uint8_t *seen;       /* [local member][sender] bitmap of counters */
static int64_t *maxseen;    /* [local member][sender] highest counter seen */
static size_t seen_bytes;   /* per (member, sender) */
static uint64_t hist[HIST_BUCKETS];
static uint64_t lat_max, received, distinct, dups, reorders, merged, splits, unexpected;
static uint64_t errors, closed_early, join_failures, joined, sent_total;
static uint64_t first_send_ns, last_send_ns, last_recv_ns, last_progress_ns, joined_all_ns;
static uint64_t done_ns;
static int next_connect, inflight, members_complete;
static char first_error[160];
static struct { char name[40]; char reason[40]; uint64_t t; } leaves[MAX_LEAVES];
static int nleaves;
static int timer_fd = -1;
static uint64_t stalled_closed_ns;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("out of memory");
    return q;
}

/* Log-linear buckets: exact below 128 ns, then 64 per power of two (under 1.6% error). */
static int bucket_of(uint64_t v) {
    if (v < 128) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    return shift * 64 + (int)(v >> shift);
}

static void set_events(conn_t *c, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.u64 = (uint64_t)(c - conns)};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl mod");
}

static void close_conn(conn_t *c, int early) {
    if (c->state == ST_CLOSED) return;
    if (c->state != ST_JOINED && c->state != ST_IDLE) {
        inflight--;
        join_failures++;
    } else if (early && !c->complete) {
        closed_early++;
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_CLOSED;
    last_progress_ns = now_ns();
}

static void note_error(const char *line, size_t len) {
    errors++;
    if (!first_error[0]) {
        size_t n = len < sizeof first_error - 1 ? len : sizeof first_error - 1;
        for (size_t i = 0; i < n; i++)
            first_error[i] = (line[i] == '"' || line[i] == '\\' || (unsigned char)line[i] < 32)
                                 ? '\'' : line[i];
        first_error[n] = 0;
    }
}

/* -- sending -- */

static void out_reserve(conn_t *c, size_t more) {
    if (c->outoff && c->outoff == c->outlen) c->outoff = c->outlen = 0;
    if (c->outlen + more > c->outcap) {
        if (c->outoff) {
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff;
            c->outoff = 0;
        }
        while (c->outlen + more > c->outcap) c->outcap = c->outcap ? c->outcap * 2 : 4096;
        c->out = xrealloc(c->out, c->outcap);
    }
}

static void out_append(conn_t *c, const char *s, size_t n) {
    out_reserve(c, n);
    memcpy(c->out + c->outlen, s, n);
    c->outlen += n;
}

static void flush(conn_t *c) {
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            close_conn(c, 1);
            return;
        }
        c->outoff += (size_t)n;
    }
    int want = c->outoff < c->outlen;
    if (want != c->want_out) {
        c->want_out = want;
        set_events(c, (c->stalled && c->state == ST_JOINED ? 0 : EPOLLIN) | (want ? EPOLLOUT : 0));
    }
}

static void generate(conn_t *c, uint64_t upto, uint64_t t) {
    char text[512], frame[700];
    while (c->generated < upto) {
        int head = snprintf(text, sizeof text, "@%d.%llu.%llu.", c->sender,
                            (unsigned long long)c->generated, (unsigned long long)t);
        int pad = text_len - head - 1;
        if (pad < 1) pad = 1;
        memset(text + head, 'x', (size_t)pad);
        text[head + pad] = '!';
        text[head + pad + 1] = 0;
        int n = text_mode ? snprintf(frame, sizeof frame, "%s\n", text)
                          : snprintf(frame, sizeof frame,
                                     "{\"type\":\"say\",\"text\":\"%s\",\"id\":\"%llu\"}\n", text,
                                     (unsigned long long)c->generated);
        out_append(c, frame, (size_t)n);
        c->generated++;
        sent_total++;
        if (!first_send_ns) first_send_ns = t;
        last_send_ns = t;
    }
}

/* What each sender should have sent by `t`: all at once (burst) or on its own schedule. */
static uint64_t due(conn_t *c, uint64_t t) {
    if (scenario == SC_BURST) {
        uint64_t batch = c->generated + OUT_BATCH / (uint64_t)(text_len + 48);
        return batch < per_sender ? batch : per_sender;
    }
    /* Senders are spread evenly over one period so the room sees a steady stream. */
    double offset = (double)c->sender / (senders > 0 ? senders : 1) / rate;
    double elapsed = (double)(t - start_ns) / 1e9 - offset;
    if (elapsed < 0) return 0;
    uint64_t n = (uint64_t)(elapsed * rate) + 1;
    return n < per_sender ? n : per_sender;
}

static void pump(conn_t *c, uint64_t t) {
    if (c->state != ST_JOINED || c->sender < 0) return;
    while (c->generated < per_sender && c->outoff == c->outlen) {
        uint64_t upto = due(c, t);
        if (upto <= c->generated) break;
        generate(c, upto, t);
        flush(c);
        if (c->state != ST_JOINED || scenario != SC_BURST) break;
        t = now_ns();
    }
    if (c->outoff < c->outlen && c->state == ST_JOINED) flush(c);
}

/* -- receiving -- */

static int local_index(conn_t *c) { return (int)(c - conns); }

static void member_done(conn_t *c, uint64_t t) {
    if (!c->complete) {
        c->complete = 1;
        members_complete++;
        done_ns = t;
    }
}

static int parse_u64(const char **p, const char *end, uint64_t *out) {
    const char *s = *p;
    uint64_t v = 0;
    if (s >= end || *s < '0' || *s > '9') return 0;
    while (s < end && *s >= '0' && *s <= '9') v = v * 10 + (uint64_t)(*s++ - '0');
    *out = v;
    *p = s;
    return 1;
}

static void on_message(conn_t *c, const char *line, size_t len, uint64_t t) {
    const char *end = line + len;
    const char *at = memchr(line, '@', len);
    if (!at) {
        splits++; /* a message frame without its marker: the tail of a broken one */
        return;
    }
    if (memchr(at + 1, '@', (size_t)(end - at - 1))) {
        merged++;
        return;
    }
    const char *p = at + 1;
    uint64_t sid, ctr, ts;
    if (!parse_u64(&p, end, &sid) || p >= end || *p++ != '.' || !parse_u64(&p, end, &ctr) ||
        p >= end || *p++ != '.' || !parse_u64(&p, end, &ts) || p >= end || *p++ != '.') {
        splits++;
        return;
    }
    const char *x = p;
    while (p < end && *p == 'x') p++;
    long want_pad = (long)text_len - (long)(x - at) - 1;
    if (want_pad < 1) want_pad = 1;
    if (p >= end || *p != '!' || (p - x) != want_pad ||
        (text_mode ? p + 1 != end : (p + 1 >= end || p[1] != '"'))) {
        splits++;
        return;
    }
    received++;
    if (sid >= (uint64_t)senders || ctr >= per_sender) {
        unexpected++;
        return;
    }
    size_t slot = (size_t)local_index(c) * (size_t)senders + sid;
    uint8_t *bits = seen + slot * seen_bytes;
    if (bits[ctr >> 3] & (1u << (ctr & 7))) {
        dups++;
        return;
    }
    bits[ctr >> 3] |= (uint8_t)(1u << (ctr & 7));
    if ((int64_t)ctr < maxseen[slot]) reorders++;
    else maxseen[slot] = (int64_t)ctr;
    distinct++;
    c->distinct++;
    uint64_t lat = t > ts ? t - ts : 0;
    hist[bucket_of(lat)]++;
    if (lat > lat_max) lat_max = lat;
    last_recv_ns = t;
    last_progress_ns = t;
    if (c->distinct == (uint64_t)senders * per_sender) member_done(c, t);
}

static void know_name(conn_t *c, const char *s, const char *end, uint64_t t) {
    /* a member name is "u<digits>" */
    if (!c->names || s >= end || *s != 'u') return;
    s++;
    uint64_t i;
    if (!parse_u64(&s, end, &i) || i >= (uint64_t)total) return;
    if (c->names[i >> 3] & (1u << (i & 7))) return;
    c->names[i >> 3] |= (uint8_t)(1u << (i & 7));
    c->names_known++;
    last_progress_ns = t;
    if (c->names_known == (uint32_t)total) member_done(c, t);
}

/* The member list of a welcome: JSON ["u0","u1"] or text "Online (2): u0, u1". */
static void on_welcome(conn_t *c, const char *line, size_t len, uint64_t t) {
    if (scenario != SC_JOIN) return;
    const char *end = line + len;
    const char *mark = text_mode ? "Online (" : "\"members\":[";
    const char *p = memmem(line, len, mark, strlen(mark));
    if (!p) return;
    p += strlen(mark);
    if (text_mode) {
        p = memmem(p, (size_t)(end - p), "): ", 3);
        if (!p) return;
        p += 3;
    }
    while (p < end) {
        if (*p == 'u' && (p == line || p[-1] == '"' || p[-1] == ' ')) know_name(c, p, end, t);
        p++;
    }
}

static void on_leave(const char *name, size_t nlen, const char *reason, size_t rlen, uint64_t t) {
    for (int i = 0; i < nleaves; i++)
        if (strlen(leaves[i].name) == nlen && !memcmp(leaves[i].name, name, nlen)) return;
    if (nleaves >= MAX_LEAVES) return;
    if (nlen > 39) nlen = 39;
    if (rlen > 39) rlen = 39;
    memcpy(leaves[nleaves].name, name, nlen);
    leaves[nleaves].name[nlen] = 0;
    memcpy(leaves[nleaves].reason, reason, rlen);
    leaves[nleaves].reason[rlen] = 0;
    for (size_t i = 0; i < rlen; i++)
        if (leaves[nleaves].reason[i] == '"' || leaves[nleaves].reason[i] == '\\')
            leaves[nleaves].reason[i] = '\'';
    leaves[nleaves].t = t;
    nleaves++;
}

#define STARTS(line, len, lit) ((len) >= sizeof(lit) - 1 && !memcmp((line), (lit), sizeof(lit) - 1))

static void on_line_json(conn_t *c, const char *line, size_t len, uint64_t t) {
    if (STARTS(line, len, "{\"type\":\"message\"")) {
        on_message(c, line, len, t);
    } else if (STARTS(line, len, "{\"type\":\"join\",\"name\":\"")) {
        if (c->names) know_name(c, line + 23, line + len, t);
    } else if (STARTS(line, len, "{\"type\":\"leave\",\"name\":\"")) {
        const char *n = line + 24, *end = line + len;
        const char *q = memchr(n, '"', (size_t)(end - n));
        const char *r = q ? memmem(q, (size_t)(end - q), "\"reason\":\"", 10) : NULL;
        const char *rq = r ? memchr(r + 10, '"', (size_t)(end - r - 10)) : NULL;
        if (q && rq) on_leave(n, (size_t)(q - n), r + 10, (size_t)(rq - r - 10), t);
    } else if (STARTS(line, len, "{\"type\":\"ping\"")) {
        /* The server pings a member that has said nothing for a while; answer as a client. */
        static const char pong[] = "{\"type\":\"pong\",\"data\":\"idle\"}\n";
        out_append(c, pong, sizeof pong - 1);
        flush(c);
    } else if (STARTS(line, len, "{\"type\":\"error\"")) {
        note_error(line, len);
    } else if (STARTS(line, len, "{\"type\":\"welcome\"")) {
        on_welcome(c, line, len, t);
    } else if (memchr(line, '@', len) || memchr(line, '!', len)) {
        splits++; /* a fragment of a message frame */
    }
}

static void on_line_text(conn_t *c, const char *line, size_t len, uint64_t t) {
    if (len && line[0] == '[') {
        on_message(c, line, len, t);
    } else if (STARTS(line, len, "* ")) {
        const char *n = line + 2, *end = line + len;
        const char *sp = memchr(n, ' ', (size_t)(end - n));
        if (!sp) return;
        if (STARTS(sp, (size_t)(end - sp), " joined")) {
            if (c->names) know_name(c, n, sp, t);
        } else if (STARTS(sp, (size_t)(end - sp), " left (")) {
            const char *r = sp + 7;
            const char *rq = memchr(r, ')', (size_t)(end - r));
            if (rq) on_leave(n, (size_t)(sp - n), r, (size_t)(rq - r), t);
        }
    } else if (STARTS(line, len, "! ")) {
        note_error(line, len);
    } else if (STARTS(line, len, "Welcome to ")) {
        on_welcome(c, line, len, t);
    } else if (memchr(line, '@', len)) {
        splits++;
    }
}

static void joined_now(conn_t *c, const char *line, size_t len, uint64_t t) {
    c->state = ST_JOINED;
    inflight--;
    joined++;
    last_progress_ns = t;
    if (joined == (uint64_t)count) joined_all_ns = t;
    on_welcome(c, line, len, t);
    if (c->stalled) set_events(c, c->want_out ? EPOLLOUT : 0);
}

static void send_line(conn_t *c, const char *s) {
    out_append(c, s, strlen(s));
    flush(c);
}

/* Handle every complete line in c->in (and the text-mode "Name: " prompt, which has none). */
static void process_input(conn_t *c, uint64_t t) {
    char *p = c->in, *end = c->in + c->inlen;
    while (p < end && c->state != ST_CLOSED) {
        if (c->state == ST_TEXT_NAME) {
            char *prompt = memmem(p, (size_t)(end - p), "Name: ", 6);
            char *nl = memchr(p, '\n', (size_t)(end - p));
            if (nl && (!prompt || nl < prompt)) {
                if (STARTS(p, (size_t)(nl - p), "! ")) note_error(p, (size_t)(nl - p));
                p = nl + 1;
                continue;
            }
            if (!prompt) break;
            p = prompt + 6;
            char name[32];
            snprintf(name, sizeof name, "u%d\n", c->gidx);
            c->state = ST_TEXT_WELCOME;
            send_line(c, name);
            continue;
        }
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        size_t len = (size_t)(nl - p);
        if (c->state == ST_JOINED) {
            if (text_mode) on_line_text(c, p, len, t);
            else on_line_json(c, p, len, t);
        } else if (c->state == ST_HELLO) {
            if (STARTS(p, len, "{\"type\":\"welcome\"")) joined_now(c, p, len, t);
            else if (STARTS(p, len, "{\"type\":\"error\"")) note_error(p, len);
        } else if (c->state == ST_TEXT_WELCOME) {
            if (STARTS(p, len, "Welcome to ")) joined_now(c, p, len, t);
            else if (STARTS(p, len, "! ")) note_error(p, len);
        }
        p = nl + 1;
        if (c->stalled && c->state == ST_JOINED) {
            c->inlen = 0;
            return;
        }
    }
    if (c->state == ST_CLOSED) return;
    size_t left = (size_t)(end - p);
    if (left && p != c->in) memmove(c->in, p, left);
    c->inlen = left;
}

static void on_readable(conn_t *c) {
    for (int round = 0; round < 8 && c->state != ST_CLOSED; round++) {
        if (c->incap - c->inlen < c->incap / 4) {
            c->incap *= 2;
            c->in = xrealloc(c->in, c->incap);
        }
        ssize_t n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            close_conn(c, 1);
            return;
        }
        if (n < 0) return;
        c->inlen += (size_t)n;
        process_input(c, now_ns());
        if (c->stalled && c->state == ST_JOINED) return;
        if ((size_t)n < (c->incap - c->inlen) / 2) return; /* drained */
    }
}

/* -- connecting -- */

static void open_some(void) {
    while (inflight < window && next_connect < count) {
        conn_t *c = &conns[next_connect++];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) die("socket");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
            die("connect");
        struct epoll_event e = {.events = EPOLLOUT | EPOLLIN, .data.u64 = (uint64_t)(c - conns)};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e) < 0) die("epoll_ctl add");
        c->state = ST_CONNECTING;
        c->want_out = 1;
        inflight++;
    }
}

static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        close_conn(c, 1);
        return;
    }
    char hello[256];
    if (text_mode) {
        snprintf(hello, sizeof hello, "%s\n", password);
        c->state = ST_TEXT_NAME;
    } else {
        snprintf(hello, sizeof hello,
                 "{\"type\":\"hello\",\"version\":1,\"name\":\"u%d\",\"password\":\"%s\"}\n",
                 c->gidx, password);
        c->state = ST_HELLO;
    }
    c->want_out = 0;
    set_events(c, EPOLLIN);
    send_line(c, hello);
}

/* -- the loop -- */

static int run_loop(uint64_t until_ns, int (*finished)(void)) {
    struct epoll_event evs[256];
    while (!finished()) {
        uint64_t t = now_ns();
        if (t >= until_ns) return 0;
        if (last_progress_ns && t - last_progress_ns > (uint64_t)(idle_s * 1e9)) return 0;
        open_some();
        int n = epoll_wait(epfd, evs, 256, 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == TIMER_KEY) {
                uint64_t ticks;
                if (read(timer_fd, &ticks, 8) < 0) {}
                continue;
            }
            conn_t *c = &conns[evs[i].data.u64];
            if (c->state == ST_CLOSED) continue;
            uint32_t ev = evs[i].events;
            if (c->state == ST_CONNECTING) {
                if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
                continue;
            }
            if (ev & EPOLLOUT) {
                flush(c);
                if (c->state == ST_JOINED) pump(c, now_ns());
            }
            if (c->state == ST_CLOSED || !(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            if (c->stalled && c->state == ST_JOINED) {
                /* It never reads; a reset means the server dropped it. */
                if (ev & (EPOLLHUP | EPOLLERR)) {
                    stalled_closed_ns = now_ns();
                    close_conn(c, 0);
                }
            } else {
                on_readable(c);
            }
        }
        if (scenario == SC_RATE || scenario == SC_BURST) {
            uint64_t now = now_ns();
            if (start_ns && now >= start_ns)
                for (int i = 0; i < count; i++)
                    if (conns[i].sender >= 0 && conns[i].state == ST_JOINED) pump(&conns[i], now);
        }
    }
    return 1;
}

static int all_joined(void) { return next_connect == count && inflight == 0; }

static int run_finished(void) {
    if (scenario == SC_JOIN && !all_joined()) return 0;
    for (int i = 0; i < count; i++) {
        conn_t *c = &conns[i];
        if (c->state == ST_CLOSED || c->stalled) continue;
        if (c->sender >= 0 && (c->generated < per_sender || c->outoff < c->outlen)) return 0;
        if (!c->complete) return 0;
    }
    return 1;
}

static void arg(const char *kv) {
    const char *v = strchr(kv, '=');
    if (!v) {
        fprintf(stderr, "loadgen: bad argument %s\n", kv);
        exit(2);
    }
    v++;
#define IS(k) (!strncmp(kv, k "=", sizeof(k)))
    if (IS("port")) port = atoi(v);
    else if (IS("first")) first = atoi(v);
    else if (IS("count")) count = atoi(v);
    else if (IS("total")) total = atoi(v);
    else if (IS("senders")) senders = atoi(v);
    else if (IS("per_sender")) per_sender = strtoull(v, NULL, 10);
    else if (IS("rate")) rate = atof(v);
    else if (IS("mode")) text_mode = !strcmp(v, "text");
    else if (IS("scenario"))
        scenario = !strcmp(v, "join") ? SC_JOIN : !strcmp(v, "burst") ? SC_BURST : SC_RATE;
    else if (IS("stalled")) stalled_idx = atoi(v);
    else if (IS("window")) window = atoi(v);
    else if (IS("text_len")) text_len = atoi(v);
    else if (IS("deadline")) deadline_s = atof(v);
    else if (IS("idle")) idle_s = atof(v);
    else if (IS("password")) password = v;
    else if (IS("bufsize")) bufsize = (size_t)atol(v);
    else {
        fprintf(stderr, "loadgen: unknown argument %s\n", kv);
        exit(2);
    }
#undef IS
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void print_result(int timed_out, double cpu) {
    uint64_t members_expected = 0;
    for (int i = 0; i < count; i++)
        if (!conns[i].stalled) members_expected++;
    printf("RESULT {\"first\":%d,\"count\":%d,\"joined\":%llu,\"join_failures\":%llu,"
           "\"members_complete\":%d,\"closed_early\":%llu,\"errors\":%llu,\"first_error\":\"%s\","
           "\"sent\":%llu,\"received\":%llu,\"distinct\":%llu,\"expected\":%llu,"
           "\"duplicated\":%llu,\"reordered\":%llu,\"merged\":%llu,\"split\":%llu,"
           "\"unexpected\":%llu,\"first_send_ns\":%llu,\"last_send_ns\":%llu,"
           "\"last_recv_ns\":%llu,\"joined_all_ns\":%llu,\"done_ns\":%llu,\"stalled_closed_ns\":%llu,\"timed_out\":%s,"
           "\"cpu_s\":%.4f,\"lat_max_ns\":%llu,\"leaves\":[",
           first, count, (unsigned long long)joined, (unsigned long long)join_failures,
           members_complete, (unsigned long long)closed_early, (unsigned long long)errors,
           first_error, (unsigned long long)sent_total, (unsigned long long)received,
           (unsigned long long)distinct,
           (unsigned long long)(scenario == SC_JOIN ? 0 : members_expected * (uint64_t)senders * per_sender),
           (unsigned long long)dups, (unsigned long long)reorders, (unsigned long long)merged,
           (unsigned long long)splits, (unsigned long long)unexpected,
           (unsigned long long)first_send_ns, (unsigned long long)last_send_ns,
           (unsigned long long)last_recv_ns, (unsigned long long)joined_all_ns,
           (unsigned long long)done_ns, (unsigned long long)stalled_closed_ns, timed_out ? "true" : "false", cpu,
           (unsigned long long)lat_max);
    for (int i = 0; i < nleaves; i++)
        printf("%s[\"%s\",\"%s\",%llu]", i ? "," : "", leaves[i].name, leaves[i].reason,
               (unsigned long long)leaves[i].t);
    printf("],\"hist\":[");
    int firstb = 1;
    for (int i = 0; i < HIST_BUCKETS; i++)
        if (hist[i]) {
            printf("%s[%d,%llu]", firstb ? "" : ",", i, (unsigned long long)hist[i]);
            firstb = 0;
        }
    printf("]}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) arg(argv[i]);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    conns = calloc((size_t)count, sizeof *conns);
    if (!conns) die("calloc");
    for (int i = 0; i < count; i++) {
        conn_t *c = &conns[i];
        c->gidx = first + i;
        c->fd = -1;
        c->sender = c->gidx < senders ? c->gidx : -1;
        c->stalled = c->gidx == stalled_idx;
        c->incap = bufsize;
        c->in = xrealloc(NULL, c->incap);
        if (scenario == SC_JOIN) c->names = calloc((size_t)total / 8 + 1, 1);
    }
    if (scenario != SC_JOIN && senders > 0 && per_sender > 0) {
        seen_bytes = (size_t)(per_sender / 8 + 1);
        seen = calloc((size_t)count * (size_t)senders, seen_bytes);
        maxseen = malloc((size_t)count * (size_t)senders * sizeof *maxseen);
        if (!seen || !maxseen) die("calloc");
        for (size_t i = 0; i < (size_t)count * (size_t)senders; i++) maxseen[i] = -1;
    }
    if (scenario == SC_RATE) {
        timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (timer_fd < 0) die("timerfd_create");
    }

    /* Setup: everyone joins before anyone speaks (the join scenario times the joining). */
    if (scenario != SC_JOIN) {
        uint64_t setup_until = now_ns() + (uint64_t)(deadline_s * 1e9);
        last_progress_ns = now_ns();
        if (!run_loop(setup_until, all_joined)) {
            fprintf(stderr, "loadgen: only %llu of %d members joined\n", (unsigned long long)joined,
                    count);
        }
    }
    printf("READY %llu\n", (unsigned long long)joined);
    fflush(stdout);

    char line[128];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "GO ", 3)) return 0;
    start_ns = strtoull(line + 3, NULL, 10);
    struct timespec ts = {.tv_sec = (time_t)(start_ns / 1000000000ull),
                          .tv_nsec = (long)(start_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
    double cpu0 = cpu_seconds();
    if (timer_fd >= 0) {
        /* Senders are topped up to their schedule every half millisecond. */
        struct itimerspec it = {.it_interval = {0, 500000}, .it_value = {0, 500000}};
        timerfd_settime(timer_fd, 0, &it, NULL);
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = TIMER_KEY};
        epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &e);
    }
    last_progress_ns = now_ns();
    if (per_sender == 0 && scenario != SC_JOIN) last_progress_ns = 0;
    int ok = run_loop(start_ns + (uint64_t)(deadline_s * 1e9), run_finished);
    print_result(!ok, cpu_seconds() - cpu0);
    /* Keep the connections open until the orchestrator has read the server's numbers. */
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
