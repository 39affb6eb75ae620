/*
 * hsbench.c: full TLS handshakes per second against one server, for
 * bench/handshake.py. Each of -c processes connects, completes a handshake
 * with the given SNI (no session cache, no tickets: never a resumption),
 * optionally sends one HTTP request and reads the answer, and closes with a
 * reset (so that tens of thousands of connections leave no TIME_WAIT
 * behind), for -t seconds. Prints one line:
 *
 *     handshakes=N errors=E seconds=S rate=R
 *
 * Build: cc -O2 -o hsbench hsbench.c -lssl -lcrypto
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_PROCS 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: hsbench -p PORT -s SNI [-a ADDR] [-t SECONDS] [-c PROCS] "
                    "[-v tls1.2|tls1.3] [-g SIGALGS] [-r]\n");
    exit(2);
}

static int connect_to(const struct sockaddr_in *sa)
{
    struct linger lg = { 1, 0 };
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One handshake (and request). 0 ok, -1 failed. */
static int one(SSL_CTX *ctx, const struct sockaddr_in *sa, const char *sni, int request)
{
    char buf[4096];
    int fd = connect_to(sa), rc = -1;
    SSL *ssl;

    if (fd < 0)
        return -1;
    ssl = SSL_new(ctx);
    if (!ssl) {
        close(fd);
        return -1;
    }
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, sni);
    if (SSL_connect(ssl) == 1) {
        rc = 0;
        if (request) {
            int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni);
            if (SSL_write(ssl, buf, n) != n)
                rc = -1;
            /* Read to the end of the answer (the server closes). */
            for (int i = 0; rc == 0 && i < 64; i++) {
                int r = SSL_read(ssl, buf, sizeof(buf));
                if (r <= 0)
                    break;
            }
        }
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    return rc;
}

static void worker(int out, const struct sockaddr_in *sa, const char *sni, double seconds,
                   const char *version, const char *sigalgs, int request)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    unsigned long ok = 0, bad = 0;
    double start, end;
    char line[128];

    if (!ctx)
        _exit(1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (version && strcmp(version, "tls1.2") == 0)
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    else if (version && strcmp(version, "tls1.3") == 0)
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (sigalgs && SSL_CTX_set1_sigalgs_list(ctx, sigalgs) != 1)
        _exit(1);
    start = now_s();
    end = start + seconds;
    /* Bounded by time, and by a count no loopback server reaches. */
    for (unsigned long i = 0; i < 100000000UL && now_s() < end; i++) {
        if (one(ctx, sa, sni, request) == 0)
            ok++;
        else if (++bad > 1000 && bad > ok)
            break;                    /* the server is not there: give up */
    }
    int n = snprintf(line, sizeof(line), "%lu %lu %.6f\n", ok, bad, now_s() - start);
    if (write(out, line, (size_t)n) != n)
        _exit(1);
    SSL_CTX_free(ctx);
    _exit(0);
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1", *sni = NULL, *version = NULL, *sigalgs = NULL;
    int port = 0, procs = 2, request = 0, opt, fds[2];
    double seconds = 5, total_s = 0;
    unsigned long total = 0, errors = 0;
    struct sockaddr_in sa;
    pid_t pids[MAX_PROCS];

    while ((opt = getopt(argc, argv, "a:p:s:t:c:v:g:r")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': sni = optarg; break;
        case 't': seconds = atof(optarg); break;
        case 'c': procs = atoi(optarg); break;
        case 'v': version = optarg; break;
        case 'g': sigalgs = optarg; break;
        case 'r': request = 1; break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || !sni || procs < 1 || procs > MAX_PROCS ||
        seconds <= 0 || seconds > 3600)
        usage();
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        usage();
    signal(SIGPIPE, SIG_IGN);
    if (pipe(fds) != 0)
        return 1;
    for (int i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return 1;
        if (pids[i] == 0) {
            close(fds[0]);
            worker(fds[1], &sa, sni, seconds, version, sigalgs, request);
        }
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    for (int i = 0; in && i < procs; i++) {
        unsigned long ok, bad;
        double s;
        if (fscanf(in, "%lu %lu %lf", &ok, &bad, &s) == 3) {
            total += ok;
            errors += bad;
            if (s > total_s)
                total_s = s;
        }
    }
    for (int i = 0; i < procs; i++)
        waitpid(pids[i], NULL, 0);
    printf("handshakes=%lu errors=%lu seconds=%.3f rate=%.1f\n", total, errors, total_s,
           total_s > 0 ? (double)total / total_s : 0.0);
    return total > 0 ? 0 : 1;
}
