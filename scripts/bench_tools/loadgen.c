/* loadgen: one process of the multichat benchmark's load generator.
 *
 * It owns a slice of a room's members (global indices [first, first+count)), each one a real
 * TCP connection to `multichat serve` on 127.0.0.1, all driven by one epoll loop so that the
 * generator costs a small fraction of what the server does. A member speaks one of three modes:
 *
 *   json  multichat/1: one JSON object per line
 *   text  the plain-text dialect (what nc users type)
 *   ws    multichat/1 over WebSocket (RFC 6455) on the same port: `GET /ws` upgraded to 101,
 *         then one JSON object per text message, client frames masked; the server's pings
 *         are answered with pongs. Only the framing differs from json. The orchestrator
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

enum {
    ST_IDLE,
    ST_CONNECTING,
    ST_WS_UPGRADE, /* ws: the upgrade request is sent, the 101 not yet read */
    ST_HELLO,
    ST_TEXT_NAME,
    ST_TEXT_WELCOME,
    ST_JOINED,
    ST_CLOSED
};
enum { SC_BURST, SC_RATE, SC_JOIN };
enum { MODE_JSON, MODE_TEXT, MODE_WS };

#define HIST_BUCKETS 4096
#define MAX_LEAVES 64
#define TIMER_KEY UINT64_MAX
#define OUT_BATCH (64 * 1024)
/* The most an HTTP response head may take (Apache and nginx refuse requests past 8 KiB). */
#define MAX_HTTP_HEAD (8 * 1024)
/* The largest WebSocket message accepted from the server: protocol.md asks clients to accept
 * frames of up to 1 MiB (a welcome in a very large room); anything past 16 MiB is a bug. */
#define MAX_WS_MESSAGE (16u * 1024 * 1024)

typedef struct {
    int fd;
    int gidx;        /* global member index: the name is "u<gidx>" */
    int state;
    int sender;      /* sender index (gidx when gidx < senders; see `spread`), or -1 */
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
    char *msg;              /* ws: a fragmented message being put back together */
    size_t msglen, msgcap;
    int msg_open;           /* ws: a text frame without FIN came, continuations follow */
} conn_t;

/* configuration */
static int port = 5002, first = 0, count = 1, total = 1, senders = 0, mode = MODE_JSON;
static int scenario = SC_BURST, stalled_idx = -1, window = 256, text_len = 64;
static uint64_t per_sender = 0;
static int spread = 0; /* senders spread over all members, not the first ones */
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
static uint64_t ws_salt;    /* ws: makes each process's Sec-WebSocket-Keys its own */
static uint32_t mask_state; /* ws: xorshift32 state for the masking keys */

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

/* -- WebSocket framing (RFC 6455 section 5) -- */

static uint32_t next_mask(void) {
    uint32_t x = mask_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return mask_state = x;
}

/* One client frame: FIN, the opcode, the mask bit, the length in 7, 16 or 64 bits, a fresh
 * masking key and the masked payload. `payload` must not point into c->out. */
static void out_ws_frame(conn_t *c, int opcode, const char *payload, size_t n) {
    out_reserve(c, n + 14);
    uint8_t *h = (uint8_t *)c->out + c->outlen;
    size_t at = 0;
    h[at++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[at++] = (uint8_t)(0x80 | n);
    } else if (n <= 0xffff) {
        h[at++] = 0x80 | 126;
        h[at++] = (uint8_t)(n >> 8);
        h[at++] = (uint8_t)n;
    } else {
        h[at++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[at++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t key = next_mask();
    uint8_t k[4];
    memcpy(k, &key, 4);
    memcpy(h + at, k, 4);
    at += 4;
    uint8_t *body = h + at;
    for (size_t i = 0; i < n; i++) body[i] = (uint8_t)payload[i] ^ k[i & 3];
    c->outlen += at + n;
}

/* One multichat/1 JSON object, framed for the mode: a line, or a masked text message. */
static void out_json(conn_t *c, const char *obj, size_t n) {
    if (mode == MODE_WS) {
        out_ws_frame(c, 0x1, obj, n);
        return;
    }
    out_reserve(c, n + 1);
    memcpy(c->out + c->outlen, obj, n);
    c->out[c->outlen + n] = '\n';
    c->outlen += n + 1;
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
        if (mode == MODE_TEXT) {
            int n = snprintf(frame, sizeof frame, "%s\n", text);
            out_append(c, frame, (size_t)n);
        } else {
            int n = snprintf(frame, sizeof frame,
                             "{\"type\":\"say\",\"text\":\"%s\",\"id\":\"%llu\"}", text,
                             (unsigned long long)c->generated);
            out_json(c, frame, (size_t)n);
        }
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
        (mode == MODE_TEXT ? p + 1 != end : (p + 1 >= end || p[1] != '"'))) {
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
    const char *mark = mode == MODE_TEXT ? "Online (" : "\"members\":[";
    const char *p = memmem(line, len, mark, strlen(mark));
    if (!p) return;
    p += strlen(mark);
    if (mode == MODE_TEXT) {
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
        static const char pong[] = "{\"type\":\"pong\",\"data\":\"idle\"}";
        out_json(c, pong, sizeof pong - 1);
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

static void send_hello(conn_t *c) {
    char hello[256];
    int n = snprintf(hello, sizeof hello,
                     "{\"type\":\"hello\",\"version\":1,\"name\":\"u%d\",\"password\":\"%s\"}",
                     c->gidx, password);
    out_json(c, hello, (size_t)n);
    flush(c);
}

/* One line from the server (json, text), or one text message (ws). */
static void on_line(conn_t *c, const char *p, size_t len, uint64_t t) {
    if (c->state == ST_JOINED) {
        if (mode == MODE_TEXT) on_line_text(c, p, len, t);
        else on_line_json(c, p, len, t);
    } else if (c->state == ST_HELLO) {
        if (STARTS(p, len, "{\"type\":\"welcome\"")) joined_now(c, p, len, t);
        else if (STARTS(p, len, "{\"type\":\"error\"")) note_error(p, len);
    } else if (c->state == ST_TEXT_WELCOME) {
        if (STARTS(p, len, "Welcome to ")) joined_now(c, p, len, t);
        else if (STARTS(p, len, "! ")) note_error(p, len);
    }
}

/* -- WebSocket: the handshake (RFC 6455 section 4) and the server's frames -- */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

/* SHA-1 (FIPS 180-4), only ever of a 60-byte key and GUID: Sec-WebSocket-Accept needs it. */
static void sha1(const uint8_t *data, size_t len, uint8_t digest[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t padded = ((len + 8) / 64 + 1) * 64; /* the data, 0x80, zeros, the 64-bit length */
    uint64_t bits = (uint64_t)len * 8;
    for (size_t off = 0; off < padded; off += 64) {
        uint8_t block[64];
        for (size_t i = 0; i < 64; i++) {
            size_t j = off + i;
            block[i] = j < len ? data[j] : j == len ? 0x80 : 0;
        }
        if (off + 64 == padded)
            for (int i = 0; i < 8; i++) block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
                   (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t next = rol32(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rol32(b, 30);
            b = a;
            a = next;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    for (int i = 0; i < 20; i++) digest[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const uint8_t *in, size_t n, char *out) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < n ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? abc[v & 63] : '=';
    }
    out[o] = 0;
}

/* base64(SHA-1(key + the RFC's GUID)): what the server must answer to `key`. */
static void ws_accept_for(const char *key, char out[29]) {
    char both[96];
    int n = snprintf(both, sizeof both, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t digest[20];
    sha1((const uint8_t *)both, (size_t)n, digest);
    base64(digest, 20, out);
}

/* A member's Sec-WebSocket-Key: 16 bytes in base64, different for every member and run. */
static void ws_key_for(const conn_t *c, char out[25]) {
    uint64_t halves[2] = {ws_salt, ws_salt * 0x9E3779B97F4A7C15ull ^ (uint64_t)c->gidx};
    base64((const uint8_t *)halves, 16, out);
}

static void send_upgrade(conn_t *c) {
    char key[25], request[512];
    ws_key_for(c, key);
    int n = snprintf(request, sizeof request,
                     "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     port, key);
    out_append(c, request, (size_t)n);
    flush(c);
}

static int has_token(const char *value, const char *token) {
    size_t n = strlen(token);
    for (const char *p = value; (p = strcasestr(p, token)); p += n) {
        int starts = p == value || p[-1] == ',' || p[-1] == ' ' || p[-1] == '\t';
        int ends = !p[n] || p[n] == ',' || p[n] == ' ' || p[n] == '\t';
        if (starts && ends) return 1;
    }
    return 0;
}

/* What is wrong with the server's answer to the upgrade (RFC 6455 section 4.1, the client's
 * checks), or NULL: 101, Upgrade: websocket, Connection: upgrade, the Sec-WebSocket-Accept
 * that goes with this member's key, and no extension (none was offered). */
static const char *ws_check_upgrade(const conn_t *c, const char *head, size_t len) {
    char copy[MAX_HTTP_HEAD + 1];
    if (len > MAX_HTTP_HEAD) return "response head over 8 KiB";
    memcpy(copy, head, len);
    copy[len] = 0;
    if (strncmp(copy, "HTTP/1.1 101", 12) || (copy[12] != ' ' && copy[12] != '\r'))
        return "not 101";
    char key[25], want[29];
    ws_key_for(c, key);
    ws_accept_for(key, want);
    int upgrade = 0, connection = 0, accept = 0;
    char *save = NULL;
    strtok_r(copy, "\r\n", &save); /* the status line */
    for (char *line; (line = strtok_r(NULL, "\r\n", &save));) {
        char *colon = strchr(line, ':');
        if (!colon) return "a header line without a colon";
        *colon = 0;
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t') value++;
        char *tail = value + strlen(value);
        while (tail > value && (tail[-1] == ' ' || tail[-1] == '\t')) *--tail = 0;
        if (!strcasecmp(line, "upgrade")) upgrade = !strcasecmp(value, "websocket");
        else if (!strcasecmp(line, "connection")) connection = has_token(value, "upgrade");
        else if (!strcasecmp(line, "sec-websocket-accept")) accept = !strcmp(value, want);
        else if (!strcasecmp(line, "sec-websocket-extensions")) return "an extension not offered";
    }
    if (!upgrade) return "no Upgrade: websocket";
    if (!connection) return "no Connection: upgrade";
    if (!accept) return "a wrong or missing Sec-WebSocket-Accept";
    return NULL;
}

static void ws_fail(conn_t *c, const char *what) {
    note_error(what, strlen(what));
    close_conn(c, 1);
}

/* One whole text message: exactly one JSON object, with no newline. Anything else breaks the
 * contract; what it broke counts as two messages in one (merged) or a part of one (split). */
static void on_ws_text(conn_t *c, const char *s, size_t len, uint64_t t) {
    const char *nl = memchr(s, '\n', len);
    if (nl || len < 2 || s[0] != '{' || s[len - 1] != '}') {
        if (nl && nl + 1 < s + len) merged++;
        else splits++;
        return;
    }
    on_line(c, s, len, t);
}

/* A data frame of a fragmented message (RFC 6455 section 5.4): kept until its FIN. */
static void ws_fragment(conn_t *c, int fin, const char *p, size_t n, uint64_t t) {
    if (c->msglen + n > MAX_WS_MESSAGE) {
        ws_fail(c, "ws: a message over 16 MiB");
        return;
    }
    if (c->msglen + n > c->msgcap) {
        while (c->msglen + n > c->msgcap) c->msgcap = c->msgcap ? c->msgcap * 2 : 4096;
        c->msg = xrealloc(c->msg, c->msgcap);
    }
    memcpy(c->msg + c->msglen, p, n);
    c->msglen += n;
    if (fin) {
        c->msg_open = 0;
        on_ws_text(c, c->msg, c->msglen, t);
    }
}

static void on_ws_frame(conn_t *c, int fin, int opcode, const char *p, size_t n, uint64_t t) {
    if (opcode >= 0x8 && (!fin || n > 125)) {
        ws_fail(c, "ws: a control frame fragmented or over 125 bytes");
        return;
    }
    if (opcode == 0x1 && !c->msg_open && fin) {
        on_ws_text(c, p, n, t);
    } else if (opcode == 0x1 && !c->msg_open) {
        c->msg_open = 1;
        c->msglen = 0;
        ws_fragment(c, fin, p, n, t);
    } else if (opcode == 0x0 && c->msg_open) {
        ws_fragment(c, fin, p, n, t);
    } else if (opcode == 0x9) {
        out_ws_frame(c, 0xA, p, n); /* pong: the ping's payload back */
        flush(c);
    } else if (opcode == 0xA) {
        /* an unsolicited pong: nothing to do */
    } else if (opcode == 0x8) {
        /* The server closes: answer with its status code, then hang up, as json does at EOF. */
        out_ws_frame(c, 0x8, p, n >= 2 ? 2 : 0);
        flush(c);
        close_conn(c, 1);
    } else if (opcode == 0x2) {
        ws_fail(c, "ws: a binary message (multichat/1 is text)");
    } else if (opcode == 0x0 || opcode == 0x1) {
        ws_fail(c, "ws: a continuation out of place");
    } else {
        ws_fail(c, "ws: an unknown opcode");
    }
}

/* ws: the 101 (once), then every complete frame in c->in. */
static void process_ws(conn_t *c, uint64_t t) {
    char *p = c->in, *end = c->in + c->inlen;
    if (c->state == ST_WS_UPGRADE) {
        char *head_end = memmem(p, c->inlen, "\r\n\r\n", 4);
        if (!head_end) {
            if (c->inlen > MAX_HTTP_HEAD) ws_fail(c, "ws upgrade: response head over 8 KiB");
            return;
        }
        const char *wrong = ws_check_upgrade(c, p, (size_t)(head_end - p));
        if (wrong) {
            char what[160];
            const char *eol = memchr(p, '\r', (size_t)(head_end - p));
            snprintf(what, sizeof what, "ws upgrade: %s (%.*s)", wrong, (int)(eol - p), p);
            ws_fail(c, what);
            return;
        }
        p = head_end + 4;
        c->state = ST_HELLO;
        send_hello(c);
    }
    while (c->state != ST_CLOSED) {
        size_t avail = (size_t)(end - p);
        if (avail < 2) break;
        const uint8_t *h = (const uint8_t *)p;
        uint64_t n = h[1] & 0x7f;
        size_t head = 2;
        if (n == 126) {
            if (avail < 4) break;
            n = (uint64_t)h[2] << 8 | h[3];
            head = 4;
        } else if (n == 127) {
            if (avail < 10) break;
            n = 0;
            for (int i = 0; i < 8; i++) n = n << 8 | h[2 + i];
            head = 10;
        }
        if (h[1] & 0x80) {
            ws_fail(c, "ws: a masked frame from the server");
            return;
        }
        if (h[0] & 0x70) {
            ws_fail(c, "ws: reserved bits set (no extension was agreed)");
            return;
        }
        if (n > MAX_WS_MESSAGE) {
            ws_fail(c, "ws: a frame over 16 MiB");
            return;
        }
        if (avail - head < n) break;
        on_ws_frame(c, h[0] & 0x80, h[0] & 0x0f, p + head, (size_t)n, t);
        p += head + n;
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

/* Handle every complete line in c->in (and the text-mode "Name: " prompt, which has none). */
static void process_input(conn_t *c, uint64_t t) {
    if (mode == MODE_WS) {
        process_ws(c, t);
        return;
    }
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
        on_line(c, p, (size_t)(nl - p), t);
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
    c->want_out = 0;
    set_events(c, EPOLLIN);
    if (mode == MODE_TEXT) {
        char line[256];
        snprintf(line, sizeof line, "%s\n", password);
        c->state = ST_TEXT_NAME;
        send_line(c, line);
    } else if (mode == MODE_WS) {
        c->state = ST_WS_UPGRADE;
        send_upgrade(c);
    } else {
        c->state = ST_HELLO;
        send_hello(c);
    }
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
    else if (IS("mode")) {
        if (!strcmp(v, "json")) mode = MODE_JSON;
        else if (!strcmp(v, "text")) mode = MODE_TEXT;
        else if (!strcmp(v, "ws")) mode = MODE_WS;
        else {
            fprintf(stderr, "loadgen: unknown mode %s\n", v);
            exit(2);
        }
    }
    else if (IS("scenario"))
        scenario = !strcmp(v, "join") ? SC_JOIN : !strcmp(v, "burst") ? SC_BURST : SC_RATE;
    else if (IS("stalled")) stalled_idx = atoi(v);
    else if (IS("spread")) spread = atoi(v);
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
    if (mode == MODE_WS) {
        /* RFC 6455 section 1.3's own example: if this is wrong, every handshake would fail. */
        char accept[29];
        ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", accept);
        if (strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
            fprintf(stderr, "loadgen: the SHA-1 self-check failed (%s)\n", accept);
            exit(2);
        }
        ws_salt = now_ns() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32 ^ (uint64_t)first;
        mask_state = (uint32_t)(ws_salt >> 32) | 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    conns = calloc((size_t)count, sizeof *conns);
    if (!conns) die("calloc");
    for (int i = 0; i < count; i++) {
        conn_t *c = &conns[i];
        c->gidx = first + i;
        c->fd = -1;
        if (spread && senders > 0) {
            /* Senders every total/senders members, so that each slice (each server, with a
               backplane) has its share of them, not all in the first. */
            int stride = total / senders > 0 ? total / senders : 1;
            int index = c->gidx / stride;
            c->sender = c->gidx % stride == 0 && index < senders ? index : -1;
        } else {
            c->sender = c->gidx < senders ? c->gidx : -1;
        }
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
