// wanprobe: a paced, numbered UDP stream with send timestamps, and its receiver.
//
//   wanprobe send [--pps N] [--seconds S] [--size B] DST:PORT...
//       every tick sends datagram `seq` to each DST in turn (stream index = position in the
//       list), stamped with CLOCK_MONOTONIC just before its own send(). Prints
//       {"sent":N,"errors":E} (per destination) at the end.
//   wanprobe recv [--port P] [--out FILE]
//       receives on 0.0.0.0:P until SIGTERM/SIGINT, then writes one line per datagram
//       received: "stream seq latency_us" (one-way: receive time - send time).
//
// Runs at SCHED_FIFO priority 10 when allowed (WANPROBE_RT=N to change, 0 for none).
// Both ends on one machine (network namespaces share CLOCK_MONOTONIC), so one-way latency
// is exact. The receive time is taken in user space right after recvmmsg() returns: what an
// application sees. (Kernel receive timestamps would be wrong here: an NFQUEUE emulator holds
// the packet after the timestamp is taken.)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x77616e70u // "wanp"
#define HEADER 24         // magic u32, stream u32, seq u64, send time ns u64 (network order)
#define MAXDST 16

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}
static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static double num(const char *opt, const char *s, double lo, double hi) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) {
    fprintf(stderr, "wanprobe: --%s %s: expected a number in [%g, %g]\n", opt, s, lo, hi);
    exit(2);
  }
  return v;
}

static void usage(void) {
  fprintf(stderr,
          "usage: wanprobe send [--pps N] [--seconds S] [--size B] DST:PORT...\n"
          "       wanprobe recv [--port P] [--out FILE]\n");
  exit(2);
}

static int do_send(int argc, char **argv) {
  static const struct option opts[] = {{"pps", required_argument, 0, 'p'},
                                       {"seconds", required_argument, 0, 's'},
                                       {"size", required_argument, 0, 'z'},
                                       {0, 0, 0, 0}};
  double pps = 200, seconds = 10;
  size_t size = 200;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'p') pps = num("pps", optarg, 1, 1e6);
    else if (c == 's') seconds = num("seconds", optarg, 0.001, 86400);
    else if (c == 'z') size = (size_t)num("size", optarg, HEADER, 65000);
    else usage();
  }
  int ndst = argc - optind;
  if (ndst < 1 || ndst > MAXDST) usage();
  int fds[MAXDST];
  uint64_t errors[MAXDST] = {0};
  for (int i = 0; i < ndst; i++) {
    char host[64];
    const char *a = argv[optind + i], *colon = strrchr(a, ':');
    if (!colon || (size_t)(colon - a) >= sizeof host) usage();
    memcpy(host, a, (size_t)(colon - a));
    host[colon - a] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)num("port", colon + 1, 1, 65535))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) usage();
    fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof sa) < 0) {
      fprintf(stderr, "wanprobe: %s: %s\n", a, strerror(errno));
      return 1;
    }
  }
  unsigned char *buf = calloc(1, size);
  if (!buf) return 1;
  uint64_t total = (uint64_t)(pps * seconds + 0.5);
  uint64_t t0 = now_ns() + 1000000;
  for (uint64_t seq = 1; seq <= total; seq++) {
    uint64_t due = t0 + (uint64_t)((double)(seq - 1) * 1e9 / pps);
    struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull), .tv_nsec = (long)(due % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    for (int i = 0; i < ndst; i++) {
      uint32_t m = htonl(MAGIC), s = htonl((uint32_t)i);
      memcpy(buf, &m, 4);
      memcpy(buf + 4, &s, 4);
      put64(buf + 8, seq);
      put64(buf + 16, now_ns());
      if (send(fds[i], buf, size, 0) < 0) errors[i]++; // e.g. ECONNREFUSED from an earlier ICMP, ENOBUFS
    }
  }
  printf("{\"sent\":%" PRIu64 ",\"errors\":[", total);
  for (int i = 0; i < ndst; i++) printf("%s%" PRIu64, i ? "," : "", errors[i]);
  printf("]}\n");
  return 0;
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

struct rec {
  uint32_t stream;
  uint32_t seq;
  int64_t lat_ns;
};

static int do_recv(int argc, char **argv) {
  static const struct option opts[] = {{"port", required_argument, 0, 'p'}, {"out", required_argument, 0, 'o'}, {0, 0, 0, 0}};
  unsigned port = 9000;
  const char *out = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'p') port = (unsigned)num("port", optarg, 1, 65535);
    else if (c == 'o') out = optarg;
    else usage();
  }
  if (optind != argc) usage();
  struct sigaction sa = {.sa_handler = on_signal}; // no SA_RESTART: recvmmsg returns EINTR
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  int big = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    fprintf(stderr, "wanprobe: bind port %u: %s\n", port, strerror(errno));
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  size_t n = 0, cap = 1 << 16;
  struct rec *recs = malloc(cap * sizeof *recs);
  enum { VLEN = 64 };
  static unsigned char bufs[VLEN][2048];
  struct iovec iov[VLEN];
  struct mmsghdr msgs[VLEN];
  while (!stop) {
    for (int i = 0; i < VLEN; i++) {
      iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof bufs[i]};
      msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
    }
    int got = recvmmsg(fd, msgs, VLEN, MSG_WAITFORONE, NULL);
    uint64_t t = now_ns();
    if (got < 0) {
      if (errno == EINTR) continue;
      perror("wanprobe: recvmmsg");
      return 1;
    }
    for (int i = 0; i < got; i++) {
      const unsigned char *b = bufs[i];
      uint32_t m, s;
      if (msgs[i].msg_len < HEADER) continue;
      memcpy(&m, b, 4);
      memcpy(&s, b + 4, 4);
      if (ntohl(m) != MAGIC) continue;
      if (n == cap) {
        cap *= 2;
        recs = realloc(recs, cap * sizeof *recs);
        if (!recs) return 1;
      }
      recs[n++] = (struct rec){.stream = ntohl(s), .seq = (uint32_t)get64(b + 8), .lat_ns = (int64_t)(t - get64(b + 16))};
    }
  }
  FILE *f = out ? fopen(out, "w") : stdout;
  if (!f) {
    perror("wanprobe: out");
    return 1;
  }
  for (size_t i = 0; i < n; i++) fprintf(f, "%u %u %.1f\n", recs[i].stream, recs[i].seq, (double)recs[i].lat_ns / 1000.0);
  fclose(f);
  return 0;
}

int main(int argc, char **argv) {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  prctl(PR_SET_TIMERSLACK, 1UL);
  // Real-time priority when allowed (root), so a busy machine delays the measurement less
  // than what is measured. WANPROBE_RT=0 turns it off.
  const char *rt = getenv("WANPROBE_RT");
  struct sched_param sp = {.sched_priority = rt ? atoi(rt) : 10};
  if (sp.sched_priority > 0) sched_setscheduler(0, SCHED_FIFO, &sp);
  if (argc < 2) usage();
  if (strcmp(argv[1], "send") == 0) return do_send(argc - 1, argv + 1);
  if (strcmp(argv[1], "recv") == 0) return do_recv(argc - 1, argv + 1);
  usage();
}
