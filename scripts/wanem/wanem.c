// wanem: a WAN link emulator on an NFQUEUE, for kernels without sch_netem.
//
// It holds every packet the kernel queues to it and gives the verdict later:
// NF_ACCEPT when the packet's time has come, NF_DROP when it is lost. One
// process serves one queue, i.e. one link in one direction. Put it on the
// RECEIVING side of a link:
//
//   iptables -t mangle -A PREROUTING -i <veth> -j NFQUEUE --queue-num N
//
// (held on the sender's OUTPUT, a packet stays charged to its socket, and TCP
// small queues throttle the sender: an artifact no real WAN has).
//
// Per packet, in this order:
//   1. random loss        --loss P                      independent, probability P
//   2. bursty loss        --ge P,R[,LOSS_BAD[,LOSS_GOOD]]  Gilbert-Elliott, one step per packet:
//                         the packet is lost with the current state's loss probability
//                         (bad: LOSS_BAD, default 1; good: LOSS_GOOD, default 0), then the
//                         state moves good->bad with P, bad->good with R. Mean loss
//                         P/(P+R)*LOSS_BAD + R/(P+R)*LOSS_GOOD, mean burst 1/R packets.
//                         --ge-ms GOOD_MS,BAD_MS[,LOSS_BAD[,LOSS_GOOD]]: the same two states
//                         in time instead of packets: each state lasts an exponential time
//                         with that mean (a link that is bad for ~BAD_MS every ~GOOD_MS,
//                         whatever the traffic on it).
//   3. rate               --rate MBIT [--limit MS]      a FIFO bottleneck: the packet waits
//                         for the packets before it to be serialised at MBIT (IP length);
//                         a packet that would wait more than --limit (default 50 ms) is
//                         dropped at the tail, as a router's buffer does.
//   4. delay and jitter   --delay MS --jitter MS [--dist uniform|normal] [--hold MS] [--reorder]
//                         uniform: delay +- jitter; normal: sigma = jitter; never below 0.
//                         By default the link keeps FIFO order, as real links do: a packet
//                         never overtakes the one before it (its delay becomes at least
//                         that packet's). Under a dense stream this raises the delay
//                         towards delay + jitter; a sparse stream (200/s with +-5 ms)
//                         keeps close to the configured distribution. --reorder gives
//                         independent delays (packets overtake each other, like netem's).
//                         --hold MS: a jitter drawn holds for MS after the packet that drew
//                         it: packets sent together (of one flow or of several) see the same
//                         delay, as a real queue gives them. Without it each packet draws
//                         its own, and under FIFO a packet sent just after another gets the
//                         larger of the two draws: streams compared side by side on one link
//                         would depend on which was sent first (+-5 ms uniform: median
//                         27.1 ms for the second, 27.9 for the third, instead of 25).
//
// Other options: --queue N (required), --seed S (default: time and pid),
// --maxlen N (kernel queue length, default 65536), --drain-ms MS (default 3000),
// --rt PRIO (SCHED_FIFO priority, default 10; 0: normal scheduling). A busy machine
// otherwise releases packets late: measured on 2 shared cores at load 3.5, mean
// lateness 0.38-0.54 ms and 6-9 % of packets over 1 ms late without it, 0.13-0.23 ms
// and 1-2 % with it. The counters report it (late_us_mean, late_us_max, late_over_1ms).
// No --queue-bypass and no fail-open: if this process dies or falls behind,
// the link drops packets (visible) rather than turning into a perfect link.
//
// Output (stdout): "ready" once the queue is bound (add the iptables rule only
// then), a JSON line of counters on SIGUSR1, and a final one on exit. SIGTERM
// or SIGINT: stop holding new packets, release the held ones at their time (at
// most --drain-ms), print the counters, exit 0. Remove the iptables rule first.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_NO_ENOBUFS
#define NETLINK_NO_ENOBUFS 5
#endif

struct held {
  uint64_t due;   // CLOCK_MONOTONIC ns
  uint64_t order; // arrival order: ties keep FIFO
  uint32_t id;
};

static struct {
  unsigned queue;
  bool have_queue;
  double delay_ns, jitter_ns, hold_ns;
  bool normal, reorder;
  double loss;
  bool ge, ge_time;
  double ge_p, ge_r, ge_loss_bad, ge_loss_good;
  double ge_good_ns, ge_bad_ns; // --ge-ms: mean time in each state
  double rate_bps; // 0: unlimited
  double limit_ns;
  uint64_t seed;
  unsigned maxlen;
  uint64_t drain_ns;
  int rt; // SCHED_FIFO priority, 0: none
} cfg = {.rt = 10, .ge_loss_bad = 1.0, .limit_ns = 50e6, .maxlen = 65536, .drain_ns = 3000000000ull};

static struct {
  uint64_t packets, bytes, accepted, lost_random, lost_burst, dropped_rate, held_max, bad_state_packets, drain_accepted;
  uint64_t late_sum_ns, late_max_ns, late_over_1ms; // release time - due time (timer and scheduling lateness)
} ctr;

static struct held *heap;
static size_t heap_len, heap_cap;
static uint64_t arrivals;
static uint64_t last_due;    // FIFO: no packet is released before the one ahead of it
static uint64_t hold_until;  // --hold: the jitter drawn last applies until then
static double held_jitter;
static uint64_t tx_free;     // rate: when the bottleneck has serialised everything accepted so far
static bool ge_bad;
static uint64_t ge_until; // --ge-ms: when the current state ends
static bool draining;
static struct nfq_q_handle *qh;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// xoshiro256** seeded by splitmix64
static uint64_t rs[4];
static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t rnd64(void) {
  uint64_t r = rotl(rs[1] * 5, 7) * 9, t = rs[1] << 17;
  rs[2] ^= rs[0];
  rs[3] ^= rs[1];
  rs[1] ^= rs[2];
  rs[0] ^= rs[3];
  rs[2] ^= t;
  rs[3] = rotl(rs[3], 45);
  return r;
}
static double uniform01(void) { return (double)(rnd64() >> 11) * 0x1.0p-53; } // [0, 1)
static bool chance(double p) { return p > 0 && uniform01() < p; }
static double expo(double mean) { return -mean * log(1.0 - uniform01()); }
static double gauss(void) {
  double u1 = uniform01(), u2 = uniform01();
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static bool before(const struct held *a, const struct held *b) {
  return a->due < b->due || (a->due == b->due && a->order < b->order);
}
static void heap_push(struct held h) {
  if (heap_len == heap_cap) {
    heap_cap = heap_cap ? heap_cap * 2 : 4096;
    heap = realloc(heap, heap_cap * sizeof *heap);
    if (!heap) {
      perror("wanem: realloc");
      exit(1);
    }
  }
  size_t i = heap_len++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!before(&h, &heap[p])) break;
    heap[i] = heap[p];
    i = p;
  }
  heap[i] = h;
  if (heap_len > ctr.held_max) ctr.held_max = heap_len;
}
static struct held heap_pop(void) {
  struct held top = heap[0], last = heap[--heap_len];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= heap_len) break;
    if (c + 1 < heap_len && before(&heap[c + 1], &heap[c])) c++;
    if (!before(&heap[c], &last)) break;
    heap[i] = heap[c];
    i = c;
  }
  if (heap_len > 0) heap[i] = last;
  return top;
}

static void verdict(uint32_t id, uint32_t v) {
  if (nfq_set_verdict(qh, id, v, 0, NULL) < 0) perror("wanem: nfq_set_verdict");
}

/** The kernel's counters for this queue (this network namespace): queue full, netlink overrun. */
static void kernel_drops(uint64_t *queue_dropped, uint64_t *user_dropped) {
  *queue_dropped = *user_dropped = 0;
  FILE *f = fopen("/proc/net/netfilter/nfnetlink_queue", "r");
  if (!f) return;
  unsigned q, portid, total, mode, range, seq, one;
  unsigned long long qd, ud;
  while (fscanf(f, "%u %u %u %u %u %llu %llu %u %u", &q, &portid, &total, &mode, &range, &qd, &ud, &seq, &one) == 9) {
    if (q == cfg.queue) {
      *queue_dropped = qd;
      *user_dropped = ud;
    }
  }
  fclose(f);
}

static void print_counters(const char *event) {
  uint64_t qd, ud;
  kernel_drops(&qd, &ud);
  printf("{\"event\":\"%s\",\"queue\":%u,\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"accepted\":%" PRIu64
         ",\"lost_random\":%" PRIu64 ",\"lost_burst\":%" PRIu64 ",\"dropped_rate\":%" PRIu64
         ",\"kernel_queue_dropped\":%" PRIu64 ",\"kernel_user_dropped\":%" PRIu64 ",\"held\":%zu,\"held_max\":%" PRIu64
         ",\"bad_state_packets\":%" PRIu64 ",\"drain_accepted\":%" PRIu64
         ",\"late_us_mean\":%.1f,\"late_us_max\":%.1f,\"late_over_1ms\":%" PRIu64 "}\n",
         event, cfg.queue, ctr.packets, ctr.bytes, ctr.accepted, ctr.lost_random, ctr.lost_burst, ctr.dropped_rate, qd, ud,
         heap_len, ctr.held_max, ctr.bad_state_packets, ctr.drain_accepted,
         ctr.accepted ? (double)ctr.late_sum_ns / (double)ctr.accepted / 1e3 : 0.0, (double)ctr.late_max_ns / 1e3,
         ctr.late_over_1ms);
  fflush(stdout);
}

static uint32_t ip_length(struct nfq_data *nfa) {
  unsigned char *p;
  int n = nfq_get_payload(nfa, &p);
  if (n >= 4 && (p[0] >> 4) == 4) return ((uint32_t)p[2] << 8) | p[3];
  if (n >= 6 && (p[0] >> 4) == 6) return (((uint32_t)p[4] << 8) | p[5]) + 40;
  return n > 0 ? (uint32_t)n : 64;
}

static int on_packet(struct nfq_q_handle *q, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
  (void)q;
  (void)msg;
  (void)data;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  uint32_t len = ip_length(nfa);
  uint64_t now = now_ns();
  ctr.packets++;
  ctr.bytes += len;
  if (draining) { // the rule is gone: what was already queued passes as it is
    ctr.drain_accepted++;
    verdict(id, NF_ACCEPT);
    return 0;
  }
  if (chance(cfg.loss)) {
    ctr.lost_random++;
    verdict(id, NF_DROP);
    return 0;
  }
  if (cfg.ge_time) {
    if (ge_until == 0) ge_until = now + (uint64_t)expo(cfg.ge_good_ns);
    while (now >= ge_until) {
      ge_bad = !ge_bad;
      ge_until += (uint64_t)expo(ge_bad ? cfg.ge_bad_ns : cfg.ge_good_ns) + 1;
    }
    if (ge_bad) ctr.bad_state_packets++;
    if (chance(ge_bad ? cfg.ge_loss_bad : cfg.ge_loss_good)) {
      ctr.lost_burst++;
      verdict(id, NF_DROP);
      return 0;
    }
  } else if (cfg.ge) {
    bool bad = ge_bad;
    if (bad) ctr.bad_state_packets++;
    ge_bad = bad ? !chance(cfg.ge_r) : chance(cfg.ge_p);
    if (chance(bad ? cfg.ge_loss_bad : cfg.ge_loss_good)) {
      ctr.lost_burst++;
      verdict(id, NF_DROP);
      return 0;
    }
  }
  uint64_t depart = now;
  if (cfg.rate_bps > 0) {
    uint64_t start = tx_free > now ? tx_free : now;
    if ((double)(start - now) > cfg.limit_ns) {
      ctr.dropped_rate++;
      verdict(id, NF_DROP);
      return 0;
    }
    tx_free = start + (uint64_t)((double)len * 8e9 / cfg.rate_bps);
    depart = tx_free;
  }
  double d = cfg.delay_ns;
  if (cfg.jitter_ns > 0) {
    if (cfg.hold_ns <= 0 || now >= hold_until) {
      held_jitter = cfg.normal ? cfg.jitter_ns * gauss() : cfg.jitter_ns * (2.0 * uniform01() - 1.0);
      hold_until = now + (uint64_t)cfg.hold_ns;
    }
    d += held_jitter;
  }
  if (d < 0) d = 0;
  uint64_t due = depart + (uint64_t)d;
  if (!cfg.reorder) {
    if (due < last_due) due = last_due;
    last_due = due;
  }
  heap_push((struct held){.due = due, .order = arrivals++, .id = id});
  return 0;
}

/** Releases every held packet due by `now` (all of them if `all`). */
static void release(uint64_t now, bool all) {
  bool any = false;
  uint32_t last = 0;
  while (heap_len > 0 && (all || heap[0].due <= now)) {
    struct held h = heap_pop();
    ctr.accepted++;
    if (!all || h.due <= now) {
      uint64_t late = now - h.due;
      ctr.late_sum_ns += late;
      if (late > ctr.late_max_ns) ctr.late_max_ns = late;
      if (late > 1000000) ctr.late_over_1ms++;
    }
    if (cfg.reorder) {
      verdict(h.id, NF_ACCEPT);
    } else {
      any = true; // FIFO: ids leave in arrival order, so one batch verdict covers them all
      last = h.id;
    }
  }
  if (any && nfq_set_verdict_batch(qh, last, NF_ACCEPT) < 0) perror("wanem: nfq_set_verdict_batch");
}

static double num(const char *opt, const char *s, double lo, double hi) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) {
    fprintf(stderr, "wanem: --%s %s: expected a number in [%g, %g]\n", opt, s, lo, hi);
    exit(2);
  }
  return v;
}

static void usage(void) {
  fprintf(stderr,
          "usage: wanem --queue N [--delay MS] [--jitter MS] [--dist uniform|normal] [--hold MS] [--reorder]\n"
          "             [--loss P] [--ge P,R[,LOSS_BAD[,LOSS_GOOD]] | --ge-ms GOOD_MS,BAD_MS[,LOSS_BAD[,LOSS_GOOD]]]\n"
          "             [--rate MBIT] [--limit MS]\n"
          "             [--seed S] [--maxlen N] [--drain-ms MS] [--rt PRIO]\n");
  exit(2);
}

static void parse(int argc, char **argv) {
  static const struct option opts[] = {
      {"queue", required_argument, 0, 'q'}, {"delay", required_argument, 0, 'd'},  {"jitter", required_argument, 0, 'j'},
      {"dist", required_argument, 0, 'D'},  {"reorder", no_argument, 0, 'o'}, {"hold", required_argument, 0, 'H'},      {"loss", required_argument, 0, 'l'},
      {"ge", required_argument, 0, 'g'},    {"ge-ms", required_argument, 0, 'G'},    {"rate", required_argument, 0, 'r'},   {"limit", required_argument, 0, 'L'},
      {"seed", required_argument, 0, 's'},  {"maxlen", required_argument, 0, 'm'}, {"drain-ms", required_argument, 0, 'x'},
      {"rt", required_argument, 0, 'R'},    {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
  int c;
  bool seeded = false;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'q': cfg.queue = (unsigned)num("queue", optarg, 0, 65535); cfg.have_queue = true; break;
      case 'd': cfg.delay_ns = num("delay", optarg, 0, 60000) * 1e6; break;
      case 'j': cfg.jitter_ns = num("jitter", optarg, 0, 60000) * 1e6; break;
      case 'D':
        if (strcmp(optarg, "normal") == 0) cfg.normal = true;
        else if (strcmp(optarg, "uniform") == 0) cfg.normal = false;
        else usage();
        break;
      case 'o': cfg.reorder = true; break;
      case 'H': cfg.hold_ns = num("hold", optarg, 0, 60000) * 1e6; break;
      case 'l': cfg.loss = num("loss", optarg, 0, 1); break;
      case 'g':
      case 'G': {
        const char *name = c == 'g' ? "ge" : "ge-ms";
        double v[4] = {0, 0, 1, 0};
        int n = 0;
        char *save = NULL, *dup = strdup(optarg);
        for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
          if (n == 4) usage();
          v[n] = num(name, t, 0, n < 2 && c == 'G' ? 3600000 : 1);
          n++;
        }
        free(dup);
        if (n < 2 || cfg.ge || cfg.ge_time) usage(); // one of --ge, --ge-ms, once
        if (c == 'g') {
          cfg.ge = true;
          cfg.ge_p = v[0];
          cfg.ge_r = v[1];
        } else {
          if (v[0] <= 0 || v[1] <= 0) usage();
          cfg.ge_time = true;
          cfg.ge_good_ns = v[0] * 1e6;
          cfg.ge_bad_ns = v[1] * 1e6;
        }
        cfg.ge_loss_bad = v[2];
        cfg.ge_loss_good = v[3];
        break;
      }
      case 'r': cfg.rate_bps = num("rate", optarg, 0, 1e6) * 1e6; break;
      case 'L': cfg.limit_ns = num("limit", optarg, 0, 60000) * 1e6; break;
      case 's': cfg.seed = (uint64_t)num("seed", optarg, 0, 1e15); seeded = true; break;
      case 'm': cfg.maxlen = (unsigned)num("maxlen", optarg, 1, 1 << 22); break;
      case 'R': cfg.rt = (int)num("rt", optarg, 0, 99); break;
      case 'x': cfg.drain_ns = (uint64_t)(num("drain-ms", optarg, 0, 600000) * 1e6); break;
      default: usage();
    }
  }
  if (optind != argc || !cfg.have_queue) usage();
  if (!seeded) cfg.seed = now_ns() ^ ((uint64_t)getpid() << 32);
  uint64_t x = cfg.seed;
  for (int i = 0; i < 4; i++) rs[i] = splitmix(&x);
}

int main(int argc, char **argv) {
  parse(argc, argv);
  prctl(PR_SET_PDEATHSIG, SIGTERM); // our parent (the test or the benchmark) gone: drain and go
  prctl(PR_SET_TIMERSLACK, 1UL);    // wake when asked, not up to 50 us later
  if (cfg.rt > 0) { // a link does not wait for the CPU: release on time even when the machine is busy
    struct sched_param sp = {.sched_priority = cfg.rt};
    if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0) perror("wanem: SCHED_FIFO (continuing without)");
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGUSR1);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    perror("wanem: signalfd");
    return 1;
  }

  struct nfq_handle *h = nfq_open();
  if (!h) {
    perror("wanem: nfq_open (needs CAP_NET_ADMIN)");
    return 1;
  }
  qh = nfq_create_queue(h, (uint16_t)cfg.queue, on_packet, NULL);
  if (!qh) {
    fprintf(stderr, "wanem: cannot bind queue %u (another process holds it?): %s\n", cfg.queue, strerror(errno));
    return 1;
  }
  // The IP header is enough: the length for the rate, nothing else is looked at.
  if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 40) < 0) {
    perror("wanem: nfq_set_mode");
    return 1;
  }
  if (nfq_set_queue_maxlen(qh, cfg.maxlen) < 0) {
    perror("wanem: nfq_set_queue_maxlen");
    return 1;
  }
  // No NFQA_CFG_F_GSO: the kernel segments GSO packets first, so loss and rate apply per
  // wire packet, as on a real link. No NFQA_CFG_F_FAIL_OPEN: an overflow is a loss.
  int fd = nfq_fd(h);
  nfnl_rcvbufsiz(nfq_nfnlh(h), 16 << 20);
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

  printf("ready\n");
  fflush(stdout);

  static char buf[1 << 16] __attribute__((aligned));
  uint64_t drain_deadline = 0;
  for (;;) {
    uint64_t now = now_ns();
    release(now, draining && now >= drain_deadline);
    if (draining && heap_len == 0) break;
    struct timespec ts, *tsp = NULL;
    if (heap_len > 0) {
      uint64_t wait = heap[0].due > now ? heap[0].due - now : 0;
      if (draining && drain_deadline - now < wait) wait = drain_deadline > now ? drain_deadline - now : 0;
      ts.tv_sec = (time_t)(wait / 1000000000ull);
      ts.tv_nsec = (long)(wait % 1000000000ull);
      tsp = &ts;
    }
    struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    int n = ppoll(pfd, 2, tsp, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("wanem: ppoll");
      return 1;
    }
    if (pfd[0].revents & POLLIN) {
      for (int i = 0; i < 256; i++) { // bounded, so held packets are not kept waiting behind a flood
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
          if (errno == ENOBUFS) continue; // counted by the kernel (user_dropped)
          perror("wanem: recv");
          return 1;
        }
        nfq_handle_packet(h, buf, (int)r);
      }
    }
    if (pfd[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGUSR1) {
          print_counters("counters");
        } else if (!draining) {
          draining = true;
          drain_deadline = now_ns() + cfg.drain_ns;
        }
      }
    }
  }
  print_counters("exit");
  nfq_destroy_queue(qh);
  nfq_close(h);
  return 0;
}
