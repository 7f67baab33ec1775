/*
 * chlaunch: serve ClickHouse's native and HTTP protocols from the chDB engine (libchdb.so).
 *
 * No clickhouse-server package is reachable on our machines, but the chDB library embeds the
 * same engine. Called through its stable C ABI (query_stable_v2) with --listen_host/--tcp_port/
 * --http_port, the engine can open its listeners; a never-ending keep-alive query then keeps the
 * process (and so the listeners) alive. SIGTERM/SIGINT end the process; the engine's data on disk
 * is consistent because MergeTree parts are written atomically.
 *
 * Usage: chlaunch LIBCHDB DATA_DIR TCP_PORT HTTP_PORT [LISTEN_HOST [ENGINE_ARG...]]
 * ENGINE_ARGs are passed to the engine as they are (for example --logger.log=FILE).
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct local_result_v2 {
    char *buf;
    size_t len;
    void *_vec;
    double elapsed;
    unsigned long long rows_read;
    unsigned long long bytes_read;
    char *error_message;
};

typedef struct local_result_v2 *(*query_fn)(int, char **);

static void on_signal(int sig) {
    (void)sig;
    /* The keep-alive query never returns; leave at once. _exit is async-signal-safe. */
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s LIBCHDB DATA_DIR TCP_PORT HTTP_PORT [LISTEN_HOST]\n", argv[0]);
        return 2;
    }
    const char *lib = argv[1], *dir = argv[2], *tcp = argv[3], *http = argv[4];
    const char *host = argc > 5 ? argv[5] : "127.0.0.1";

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    void *h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        fprintf(stderr, "chlaunch: dlopen %s: %s\n", lib, dlerror());
        return 1;
    }
    query_fn query = (query_fn)dlsym(h, "query_stable_v2");
    if (!query) {
        fprintf(stderr, "chlaunch: query_stable_v2 not found in %s (wrong chDB version?)\n", lib);
        return 1;
    }

    char a_path[4096], a_host[256], a_tcp[64], a_http[64];
    snprintf(a_path, sizeof a_path, "--path=%s", dir);
    snprintf(a_host, sizeof a_host, "--listen_host=%s", host);
    snprintf(a_tcp, sizeof a_tcp, "--tcp_port=%s", tcp);
    snprintf(a_http, sizeof a_http, "--http_port=%s", http);
    char *q = "--query=SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; "
              "SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_block_size=1 FORMAT Null";
    int extra = argc > 6 ? argc - 6 : 0;
    char **args = calloc(8 + extra, sizeof(char *));
    if (!args) {
        fprintf(stderr, "chlaunch: out of memory\n");
        return 1;
    }
    int n = 0;
    args[n++] = "clickhouse";
    args[n++] = "--multiquery";
    args[n++] = a_path;
    args[n++] = a_host;
    args[n++] = a_tcp;
    args[n++] = a_http;
    for (int i = 0; i < extra; i++) args[n++] = argv[6 + i];
    args[n++] = q;

    fprintf(stderr, "chlaunch: serving %s on %s tcp=%s http=%s\n", dir, host, tcp, http);
    struct local_result_v2 *r = query(n, args);
    /* Only reached when the engine refused to start or the keep-alive query failed. */
    if (r && r->error_message) {
        fprintf(stderr, "chlaunch: engine error: %s\n", r->error_message);
    } else {
        fprintf(stderr, "chlaunch: engine returned unexpectedly\n");
    }
    return 1;
}
